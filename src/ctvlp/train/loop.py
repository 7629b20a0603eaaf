"""The training loop: accumulation, autocast, clipping, NaN-step skipping, logging, checkpoints, resume.

Exact resume: a batch's content depends only on (seed, epoch, index) and the batch order only on
(seed, epoch) (see ``ctvlp.data.loader``); the checkpoint stores the position (epoch, batch) after
the last consumed batch, the optimiser and scheduler states and the RNG states, so a resumed CPU run
reproduces the uninterrupted run's losses.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import torch
from tqdm import tqdm

from ctvlp.config import to_dict
from ctvlp.data.cache import Cache
from ctvlp.data.loader import require_split, set_epoch
from ctvlp.data.manifest import label_names_of
from ctvlp.data.prompt_names import CORPUS
from ctvlp.data.prompts import prompt_set, split_reports
from ctvlp.data.text import TextProducts
from ctvlp.errors import CtvlpError
from ctvlp.losses.registry import uses_logit_bias
from ctvlp.models.store import latest_checkpoint, load_checkpoint
from ctvlp.models.vlp import VisionLanguageModel
from ctvlp.train import distributed
from ctvlp.train.checkpoint import rng_state, save_checkpoint, set_rng_state
from ctvlp.train.config import TrainConfig
from ctvlp.train.data import MODEL_INPUTS, checked, drop_bad_samples, train_loader
from ctvlp.train.metrics_log import MetricsLog
from ctvlp.train.objective import Objective
from ctvlp.train.requirements import check_frozen, check_preprocessing, check_requirements
from ctvlp.train.optim import build_optimizer
from ctvlp.train.schedule import build_scheduler


class TrainingError(CtvlpError):
    """Training cannot go on (too many non-finite losses, ...)."""


def tokenizer_files(model: VisionLanguageModel) -> dict[str, bytes]:
    """The text tower's tokenizer as ``{file name: bytes}`` (carried by every checkpoint)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        model.text.tokenizer.save_pretrained(tmp)
        return {p.name: p.read_bytes() for p in Path(tmp).iterdir() if p.is_file()}


def autocast(cfg: TrainConfig, device: torch.device):
    use_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16 else contextlib.nullcontext()


def batches(loader, epoch: int, start: int):
    """Endless (epoch, index, batch) from ``loader``, starting at batch ``start`` of ``epoch``."""
    while True:
        set_epoch(loader, epoch, start)
        for i, batch in enumerate(loader, start=start):
            yield epoch, i, checked(batch)
        epoch, start = epoch + 1, 0


class Trainer:
    """Owns the model, optimiser, data and logs of one run in ``out``."""

    def __init__(self, cfg: TrainConfig, data: Path, out: Path, resume: bool = False, progress: bool = True):
        self.cfg, self.out, self.progress = cfg, Path(out), progress
        self.place = distributed.setup()
        self.cache = Cache(data)
        check_preprocessing(cfg, self.cache)
        require_split(self.cache, cfg.data.train_split)
        check_requirements(cfg, self.cache)
        bad = drop_bad_samples(self.cache, cfg.data, self.out if self.place.is_main else None)
        prompts, corpus = {}, cfg.prompt_corpus()
        if corpus is not None:  # the corpus style, mined once from the training reports, carried by the checkpoints
            labels = label_names_of(self.cache.index.columns)
            mined = prompt_set(CORPUS, labels, reports=lambda: split_reports(self.cache, corpus))
            prompts = {CORPUS: mined.style(CORPUS).to_dict()}
        torch.manual_seed(cfg.seed)
        self.model = VisionLanguageModel(cfg.model, prompts=prompts).to(self.place.device)
        check_frozen(cfg, [name for name, _ in self.model.named_parameters()])
        self.model.vision.set_grad_checkpointing(cfg.grad_checkpointing)
        self.objectives = {kind: Objective(loss) for kind, loss in cfg.objectives.items()}
        self.loss_terms = cfg.all_terms
        if not uses_logit_bias(self.loss_terms):
            self.model.logit_bias.requires_grad_(False)  # no term reads it (the softmax loss has no bias)
        self.optimizer = build_optimizer(self.model, cfg.optim)
        self.trainable = {name for name, p in self.model.named_parameters() if p.requires_grad}
        self.frozen: tuple[str, ...] | None = None
        self.scheduler = build_scheduler(self.optimizer, cfg.optim, cfg.steps)
        self.loader = train_loader(self.cache, cfg.data, self.text_products(), cfg.seed, self.place.rank,
                                   self.place.world, exclude=[b.id for b in bad])
        self.step, self.epoch, self.batch_in_epoch, self.bad_steps = 0, 0, 0, 0
        self.tokenizer = tokenizer_files(self.model) if self.place.is_main else {}  # carried by every checkpoint
        if resume:
            self._resume()
        # a step kind or stage that leaves parameters unused needs DDP's unused-parameter search
        self.ddp = distributed.wrap(self.model, self.place, find_unused=bool(cfg.tasks or cfg.stages))

    # -- checkpoints -------------------------------------------------------------------------
    def _resume(self) -> None:
        path = latest_checkpoint(self.out / "checkpoints")
        if path is None:
            raise TrainingError(self.out, "--resume: no checkpoint in OUT/checkpoints")
        state = load_checkpoint(path)
        if state["config"] != to_dict(self.cfg):
            raise TrainingError(path, "--resume with a different configuration than the checkpoint's; "
                                      "use the same recipe, --steps and --set values")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        self.bad_steps = state.get("bad_steps", 0)
        set_rng_state(state["rng"])

    def save(self) -> Path | None:
        if not self.place.is_main:
            return None
        state = {"config": to_dict(self.cfg), "recipe": self.cfg.recipe, "preprocess": to_dict(self.cache.config),
                 "tokenizer": self.tokenizer, "label_names": self.label_names(), "prompts": self.model.prompts,
                 "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "step": self.step, "epoch": self.epoch,
                 "batch_in_epoch": self.batch_in_epoch, "bad_steps": self.bad_steps, "rng": rng_state()}
        return save_checkpoint(self.out / "checkpoints", state, self.cfg.keep_last)

    def label_names(self) -> list[str]:
        return list(self.loader.dataset.label_names)

    def text_products(self) -> TextProducts:
        """What the loader's collate makes of each batch's text for this run's model and objectives:
        tokens or sentences per ``model.text_input``, and OSL pairs when some objective reads them."""
        cfg = self.cfg
        osl = any("osl" in objective.outputs for objective in self.objectives.values())
        return TextProducts(self.model.text.tokenizer, cfg.model.text_input, cfg.data.max_text_tokens,
                            cfg.model.text.max_length, cfg.model.sentence_match,
                            cfg.data.osl_pairs if osl else 0, cfg.seed)

    # -- one optimiser step --------------------------------------------------------------------
    def _set_stage(self, frozen: tuple[str, ...]) -> None:
        """Freeze the parameters under the stage's prefixes, unfreeze the other trainable ones."""
        if frozen == self.frozen:
            return
        for name, p in self.model.named_parameters():
            if name in self.trainable:
                p.requires_grad_(not name.startswith(frozen) if frozen else True)
        self.frozen = frozen

    def _micro_step(self, batch: dict, kind: str, sync: bool) -> dict[str, torch.Tensor]:
        """The batch's tensors (the collate made every text-derived one, ``ctvlp.data.text``) to the model,
        its outputs and the batch keys its losses declare (``Loss.batch_keys``) to the objective, backward."""
        dev, objective = self.place.device, self.objectives[kind]
        inputs = {k: batch[k].to(dev, non_blocking=True) for k in MODEL_INPUTS if k in batch}
        ctx = contextlib.nullcontext() if sync or self.ddp is self.model else self.ddp.no_sync()
        with ctx:
            with autocast(self.cfg, dev):
                out = self.ddp(**inputs, mask_names=batch.get("mask_names"), label_names=self.label_names(),
                               outputs=objective.outputs)
                targets = {k: batch[k].to(dev) for k in objective.batch_keys if k in batch}  # the registry's
                parts = objective(**targets, **{k: v.float() if v.is_floating_point() else v for k, v in out.items()})
            (parts["loss"] / self.cfg.grad_accum).backward()
        return {k: v.detach() for k, v in parts.items()}

    def _optimizer_step(self, loss: torch.Tensor) -> tuple[bool, float]:
        """Clip and step, or skip (and count) when the loss is not finite on some process."""
        finite = distributed.all_true(bool(torch.isfinite(loss)), self.place)
        grad_norm = float("nan")
        if finite:
            clip = self.cfg.optim.grad_clip
            params = [p for p in self.model.parameters() if p.grad is not None]
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, clip if clip > 0 else float("inf")))
            self.optimizer.step()
        else:
            self.bad_steps += 1
            if self.bad_steps > self.cfg.max_bad_steps:
                raise TrainingError(self.out, f"{self.bad_steps} steps with a non-finite loss (limit "
                                              f"max_bad_steps={self.cfg.max_bad_steps}); last at step {self.step + 1}")
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return finite, grad_norm

    # -- the loop ------------------------------------------------------------------------------
    def fit(self) -> dict:
        cfg, is_main = self.cfg, self.place.is_main
        log = MetricsLog(self.out, resume_step=self.step if self.step else None) if is_main else None
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not (is_main and self.progress), unit="step",
                   dynamic_ncols=True)
        stream = batches(self.loader, self.epoch, self.batch_in_epoch)
        window = {"samples": 0, "start": time.perf_counter()}
        deadline = time.monotonic() + 60 * cfg.max_minutes
        self.model.train()
        try:
            while self.step < cfg.steps:
                kinds, stage = cfg.kinds_at(self.step)
                self._set_stage(stage.frozen if stage else ())
                parts = []
                for k in range(cfg.grad_accum):
                    micro: dict[str, torch.Tensor] = {}
                    for j, kind in enumerate(kinds):  # several kinds: one micro-batch each, one summed update
                        epoch, index, batch = next(stream)
                        sync = k == cfg.grad_accum - 1 and j == len(kinds) - 1  # DDP: reduce after the last backward
                        for name, value in self._micro_step(batch, kind, sync=sync).items():
                            micro[name] = micro[name] + value if name in micro else value
                        window["samples"] += len(batch["id"]) * self.place.world
                        self.epoch, self.batch_in_epoch = epoch, index + 1
                    parts.append(micro)
                terms = {name: torch.stack([p[name] for p in parts]).mean() for name in parts[0]}
                loss = terms["loss"]
                lr = {g.get("kind", "decay"): g["lr"] for g in self.optimizer.param_groups}
                finite, grad_norm = self._optimizer_step(loss)
                self.step += 1
                if finite:
                    for name, value in terms.items():
                        window[name] = window.get(name, 0.0) + float(value)
                        window[f"n_{name}"] = window.get(f"n_{name}", 0) + 1
                bar.update(1)
                bar.set_postfix(loss=f"{float(loss):.4f}", epoch=self.epoch)
                last = self.step == cfg.steps or (cfg.max_minutes > 0 and distributed.any_true(
                    time.monotonic() > deadline, self.place))
                if self.step % cfg.log_every == 0 or last:
                    record = self._record(window, lr, grad_norm)
                    if log is not None:
                        log.write(record)
                    window = {"samples": 0, "start": time.perf_counter()}
                if self.step % cfg.ckpt_every == 0 or last:
                    self.save()
                if last:
                    break
        finally:
            bar.close()
            if log is not None:
                log.close()
        return {"steps": self.step, "bad_steps": self.bad_steps, "epoch": self.epoch}

    def _record(self, window: dict, lr: dict[str, float], grad_norm: float) -> dict:
        seconds = time.perf_counter() - window["start"]
        means = {name: window.get(name, 0.0) / window[f"n_{name}"] if window.get(f"n_{name}") else None
                 for name in ("loss", *self.loss_terms)}  # each term over the steps that computed it (None: none did)
        lrs = {"lr": lr.get("decay", next(iter(lr.values())))} | ({"lr_muon": lr["muon"]} if "muon" in lr else {})
        return {"step": self.step, "loss": means["loss"], **{f"loss_{n}": means[n] for n in self.loss_terms}, **lrs,
                "samples_per_s": window["samples"] / max(seconds, 1e-9), "grad_norm": grad_norm,
                "logit_scale": float(self.model.scale().detach()), "logit_bias": float(self.model.logit_bias.detach()),
                "epoch": self.epoch, "bad_steps": self.bad_steps}
