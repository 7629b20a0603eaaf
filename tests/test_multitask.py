"""Recipes with several kinds of step (SegVL, Uniferum, COLIPRI): the model's output groups, stages,
alternation, freezing, structured reports and multi-scale pooling."""

from __future__ import annotations

import dataclasses
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ctvlp.config import apply_overrides
from ctvlp.data.cache import Cache
from ctvlp.data.osl_pairs import OslPairs
from ctvlp.data.reports import structure_report
from ctvlp.data.text import osl_tensors
from ctvlp.eval.suite import SuiteConfig, run_suite
from ctvlp.models.heads import masked_mean, multiscale_pool
from ctvlp.models.vlp import VisionLanguageModel
from ctvlp.models.store import load_checkpoint
from ctvlp.recipes import get_recipe
from ctvlp.train.loop import Trainer
from ctvlp.train.metrics_log import read_metrics
from conftest import make_synthetic_cache

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return make_synthetic_cache(tmp_path_factory.mktemp("multitask"), 16, 5)


def _fit(cache: Path, out: Path, name: str, *sets: str) -> tuple[Trainer, list[dict]]:
    cfg = apply_overrides(get_recipe(name, debug=True), ["steps=4", "log_every=1", *sets])
    trainer = Trainer(cfg, cache, out, progress=False)
    trainer.fit()
    return trainer, read_metrics(out)


def test_segvl_stage_one_freezes_the_heads_then_sums_both_losses(cache, tmp_path):
    """Steps 1-2: image-report only, segmentation heads untouched (lambda stays 0); steps 3-4: each one
    update of the image-report loss plus the Tversky loss weighted 0.75."""
    cfg = apply_overrides(get_recipe("segvl", debug=True), ["steps=4", "log_every=1", "ckpt_every=2", "keep_last=3"])
    trainer = Trainer(cfg, cache, tmp_path / "segvl", progress=False)
    start = {k: v.clone() for k, v in trainer.model.state_dict().items() if k.startswith("seg.")}
    trainer.fit()
    after_stage1 = load_checkpoint(tmp_path / "segvl" / "checkpoints" / "step-0000002.pt")["model"]
    assert all(torch.equal(v, after_stage1[k]) for k, v in start.items()), "stage 1 trained a segmentation head"
    records = read_metrics(tmp_path / "segvl")
    kinds = [("clip" if r["loss_clip"] is not None else "") + ("tversky" if r["loss_tversky"] is not None else "")
             for r in records]  # null: no step of the window computed the term
    assert kinds == ["clip", "clip", "cliptversky", "cliptversky"]
    for r in records[2:]:
        assert r["loss"] == pytest.approx(r["loss_clip"] + 0.75 * r["loss_tversky"], rel=1e-5)
    changed = [k for k, v in trainer.model.state_dict().items() if k in start and not torch.equal(start[k], v)]
    assert any(k.startswith("seg.voxel.") for k in changed) and any(k.startswith("seg.anchor.") for k in changed)


def test_segvl_stage_two_is_one_adamw_update_of_the_summed_loss(cache, tmp_path):
    """SegVL's stage 2 (``together``): one optimiser step takes one micro-batch for L_IT and the next for
    L_VM and makes ONE AdamW update of L_IT + 0.75 L_VM. Reference: the same two batches through a copy
    of the model, the summed loss back-propagated once, the global norm clipped, then AdamW's first step
    written out: p <- p (1 - lr wd) - lr g / (|g| + eps) (m_hat = g, v_hat = g^2 after one step)."""
    import copy

    from ctvlp.train.data import MODEL_INPUTS
    from ctvlp.train.loop import batches
    from ctvlp.train.objective import Objective

    cfg = apply_overrides(get_recipe("segvl", debug=True), ["steps=1", "optim.warmup_steps=0"])
    cfg = dataclasses.replace(cfg, stages=(cfg.stages[1],))  # stage 2 from the first step
    assert cfg.stages[0].together and cfg.stages[0].cycle == ("pairs", "masks")
    trainer = Trainer(cfg, cache, tmp_path / "together", progress=False)
    model = copy.deepcopy(trainer.model)
    groups = [(g["lr"], g["weight_decay"], g["eps"]) for g in trainer.optimizer.param_groups]
    owner = {id(p): i for i, g in enumerate(trainer.optimizer.param_groups) for p in g["params"]}
    rng = torch.get_rng_state()
    trainer.fit()
    stream = batches(trainer.loader, 0, 0)
    torch.set_rng_state(rng)
    total = 0.0
    for kind in ("pairs", "masks"):
        batch = next(stream)[2]
        objective = Objective(cfg.objectives[kind])
        inputs = {k: batch[k] for k in MODEL_INPUTS if k in batch}
        out = model(**inputs, mask_names=batch.get("mask_names"),
                    label_names=trainer.label_names(), outputs=objective.outputs)
        total = total + objective(**out)["loss"]
    total.backward()
    params = [p for p in model.parameters() if p.grad is not None]
    torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)
    expected = {}
    for (name, p), p_trained in zip(model.named_parameters(), trainer.model.parameters()):
        if p.grad is None:
            expected[name] = p.detach()
            continue
        lr, wd, eps = groups[owner[id(p_trained)]]
        expected[name] = p.detach() * (1 - lr * wd) - lr * p.grad / (p.grad.abs() + eps)
    trained = dict(trainer.model.named_parameters())
    diff = max(float((trained[n].detach() - e).abs().max()) for n, e in expected.items())
    assert diff <= 1e-7, diff
    for prefix in ("seg.voxel.", "seg.anchor.", "vision.", "text_proj."):  # both losses moved the model
        assert any(not torch.equal(p.detach(), trained[n].detach()) for n, p in model.named_parameters()
                   if n.startswith(prefix) and p.grad is not None)
    records = read_metrics(tmp_path / "together")
    assert records[0]["loss"] == pytest.approx(float(total.detach()), rel=1e-6)
    assert records[0]["loss_clip"] is not None and records[0]["loss_tversky"] is not None


@pytest.mark.slow
def test_segvl_stages_under_torchrun_two_processes(cache, tmp_path):
    """The staged, two-kind SegVL recipe across 2 gloo processes (DDP with unused parameters): stage 1
    leaves the segmentation heads exactly at their initialisation, stage 2 sums both losses and trains them."""
    out = tmp_path / "ddp"
    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port,
           "-m", "ctvlp", "train", "--recipe", "segvl", "--debug", "--data", str(cache), "--out", str(out),
           "--steps", "4", "--set", "log_every=1", "--set", "ckpt_every=2", "--set", "keep_last=3",
           "--no-progress", "--no-eval"]
    done = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    records = read_metrics(out)
    assert [r["loss_tversky"] is not None for r in records] == [False, False, True, True]
    init = Trainer(apply_overrides(get_recipe("segvl", debug=True), ["steps=4"]), cache, tmp_path / "init",
                   progress=False).model.state_dict()  # same seed: the processes' initial weights
    stage1 = load_checkpoint(out / "checkpoints" / "step-0000002.pt")["model"]
    final = load_checkpoint(out / "checkpoints" / "step-0000004.pt")["model"]
    seg = [k for k in init if k.startswith("seg.")]
    assert seg and all(torch.equal(init[k], stage1[k]) for k in seg), "stage 1 moved a segmentation head"
    assert any(not torch.equal(stage1[k], final[k]) for k in seg if k.startswith("seg.voxel."))
    assert not torch.equal(init["logit_scale"], stage1["logit_scale"])  # stage 1 did train the rest


def test_uniferum_trains_labels_masks_and_reports_in_one_step(cache, tmp_path):
    trainer, records = _fit(cache, tmp_path / "uni", "uniferum")
    assert all(math.isfinite(r[f"loss_{t}"]) for r in records for t in ("siglip", "masked_bce", "tversky"))
    batch = next(iter(trainer.loader))
    assert batch["image"].shape[1] == 2  # HU window + body mask
    assert set(batch["image"][:, 1].unique().tolist()) <= {-1.0, 1.0}


def test_colipri_alternates_image_report_and_mae_steps(cache, tmp_path):
    trainer, records = _fit(cache, tmp_path / "colipri", "colipri")
    pairs = [all(r[f"loss_{t}"] is not None for t in ("clip", "osl", "caption")) for r in records]
    mae = [r["loss_mae"] is not None for r in records]
    assert pairs == [True, False, True, False] and mae == [False, True, False, True]
    text = next(iter(trainer.loader))["text"][0]
    assert "positive:" in text or "negative:" in text


def test_colipri_osl_pairs_come_from_the_plain_findings(cache, tmp_path, monkeypatch):
    """COLIPRI's towers read the structured text ("Heart: positive: ..."); the trainer draws its OSL pairs
    from the samples' plain findings, so no s+ carries a section prefix."""
    from ctvlp.data import text as loop  # the collate draws the pairs (ctvlp.data.text.TextProducts)

    seen: list[list[str]] = []
    drawn: list[str] = []
    real = loop.build_osl_pairs

    def recording(reports, k, rng):
        seen.append(list(reports))
        pairs = real(reports, k, rng)
        drawn.extend(t for row, valid in zip(pairs.pos_texts, pairs.valid) for t, v in zip(row, valid) if v)
        return pairs

    monkeypatch.setattr(loop, "build_osl_pairs", recording)
    trainer, _ = _fit(cache, tmp_path / "colipri", "colipri", "steps=2")
    batch = next(iter(trainer.loader))
    assert all("positive:" not in r and "negative:" not in r for reports in seen for r in reports)
    assert seen[0] == batch["findings"] and any("positive:" in t for t in batch["text"])
    assert drawn and not any(": positive:" in t or ": negative:" in t for t in drawn)


def test_model_output_groups_have_the_losses_shapes(cache):
    cfg = get_recipe("colipri", debug=True)
    model = VisionLanguageModel(apply_overrides(cfg, ["model.label_prompts=true"]).model).eval()  # no dropout
    image = torch.randn(2, 1, 8, 32, 32)
    tokens = model.tokenize(["Lungs are clear.", "A 7 mm nodule in the left lung. No pleural effusion."])
    osl = {"pos_texts": [["a", ""], ["b", "c"]], "neg_texts": [["No a.", ""], ["No b.", "No c."]],
           "is_true": [[True, False], [True, False]], "valid": [[True, False], [True, True]]}
    osl = osl_tensors(OslPairs(**osl), model.text.tokenizer, model.text.cfg.max_length)
    out = model(image, input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"], **osl,
                label_names=["Emphysema", "Cardiomegaly", "Lung nodule"], outputs=("pairs", "labels", "caption", "osl"))
    length = tokens["input_ids"].shape[1]
    assert out["label_logits"].shape == (2, 3) and out["caption_logits"].shape[:2] == (2, length)
    assert out["caption_targets"][:, :-1].tolist() == torch.where(
        tokens["attention_mask"][:, 1:].bool(), tokens["input_ids"][:, 1:], -100).tolist()
    assert out["osl_pos_emb"].shape == (2, 2, 32) and not out["osl_pos_emb"][0, 1].any()  # invalid slot: zeros
    assert torch.allclose(out["osl_pos_emb"][1, 0], model.encode_texts(["b"])[0], atol=1e-5)
    mae = model(image, outputs=("mae",))
    assert mae["mae_mask"].float().mean().item() == pytest.approx(0.75, abs=0.13)
    with pytest.raises(ValueError, match="only the 'mae' outputs"):
        model(image, outputs=("mae", "pairs"))


def test_multiscale_pool_golden():
    """Grid (2, 2, 2), one channel holding the token index: the global mean and each token as its own cell."""
    tokens = torch.arange(8, dtype=torch.float32).view(1, 8, 1)
    out = multiscale_pool(tokens, None, (2, 2, 2))
    assert out.tolist() == [[3.5, 0, 1, 2, 3, 4, 5, 6, 7]]
    mask = torch.tensor([[True] * 4 + [False] * 4])  # the second z row is padding
    out = multiscale_pool(tokens, mask, (2, 2, 2))
    assert out[0, 0] == masked_mean(tokens, mask)[0, 0] == 1.5
    assert out[0, 1:5].tolist() == [0, 1, 2, 3] and out[0, 5:].tolist() == [0, 0, 0, 0]


def test_structure_report_sections_positive_and_negative_findings():
    text = ("Heart size is normal. There is no pericardial effusion. A 7 mm nodule is present in the left lung "
            "lower lobe. No pleural effusion. The study was performed without contrast.")
    lines = structure_report(text).splitlines()
    assert lines[0].startswith("Heart: negative: Heart size is normal. There is no pericardial effusion.")
    lung = next(line for line in lines if line.startswith("Lung:"))
    assert "positive: A 7 mm nodule" in lung and "negative:" not in lung
    assert lines[-1].startswith("Other:") and "without contrast" in lines[-1]


def test_sigvlp_evaluation_includes_organ_classification(cache):
    """eval.tasks=[organs]: the metrics gain the organ task's numbers, chunks of organ_chunk_depth slices."""
    cfg = apply_overrides(get_recipe("sigvlp", debug=True), ["eval.organ_chunk_depth=4", "eval.tasks=[organs]"])
    metrics = run_suite(VisionLanguageModel(cfg.model), Cache(cache), cfg.eval, SuiteConfig.after_training(cfg.eval)).metrics
    organs = metrics["organs"]
    assert organs["chunk_depth"] == 4 and organs["n_chunks"] > metrics["n"]["test_volumes"]
    assert organs["per_organ"] and all(v["auroc"] is None or 0 <= v["auroc"] <= 1 for v in organs["per_organ"].values())


@pytest.mark.parametrize("name, task, key", [("segvl", "segmentation", "mean_dice"),
                                             ("colipri", "generation", "rouge_l")])
def test_recipes_evaluate_their_own_tasks(cache, name, task, key):
    """SegVL's evaluation adds zero-shot segmentation Dice, COLIPRI's report generation, on task_volumes."""
    assert task in get_recipe(name, debug=True).eval.tasks  # with its paper's others (test_paper_eval_tasks.py)
    cfg = apply_overrides(get_recipe(name, debug=True), ["eval.task_volumes=2", f"eval.tasks=[{task}]"])
    metrics = run_suite(VisionLanguageModel(cfg.model), Cache(cache), cfg.eval, SuiteConfig.after_training(cfg.eval)).metrics
    result = metrics[task]
    assert result[key] is None or 0.0 <= result[key] <= 1.0
    assert result["n_volumes" if task == "segmentation" else "n"] == 2


def test_uniferum_zero_shot_scores_by_its_own_label_head(cache):
    """Uniferum evaluates with the label head it trains (sigmoid(t cos + b)), not prompt pairs; a model
    without one is refused by name."""
    from ctvlp.data.prompt_names import LABEL_HEAD
    from ctvlp.models.prompting import prompt_scorer

    cfg = get_recipe("uniferum", debug=True)
    assert cfg.eval.prompt_style == LABEL_HEAD
    torch.manual_seed(0)
    model = VisionLanguageModel(cfg.model).eval()
    with torch.no_grad():
        model.label_logit_bias.fill_(0.7)  # a non-trivial bias the scores must carry
    labels = ["Emphysema", "Cardiomegaly"]
    emb = torch.nn.functional.normalize(torch.randn(3, cfg.model.embed_dim), dim=-1)
    u = model.encode_texts(["Emphysema.", "Cardiomegaly."]).detach()
    t = model.label_logit_scale.exp().clamp(max=cfg.model.max_logit_scale)
    expected = torch.sigmoid(t * emb @ u.T + 0.7).detach().numpy()  # (3, 2), by hand
    assert prompt_scorer(model, labels, LABEL_HEAD)(emb) == pytest.approx(expected, abs=1e-6)
    metrics = run_suite(model, Cache(cache), cfg.eval, SuiteConfig.after_training(cfg.eval)).metrics
    assert metrics["prompts"]["style"] == LABEL_HEAD and 0.0 <= metrics["zeroshot"]["volume"]["mean_auroc"] <= 1.0
    plain = VisionLanguageModel(get_recipe("sigvlp", debug=True).model)
    with pytest.raises(ValueError, match="label head.*uniferum"):
        prompt_scorer(plain, labels, LABEL_HEAD)
