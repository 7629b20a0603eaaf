"""Segmentation probe: a light voxel head trained on the frozen vision tokens, scored like zero-shot segmentation.

Head. :class:`ctvlp.models.voxel_head.VoxelHead` with E = K (one logit per structure): each token
x_n (C,) of the frozen tower goes through W2 GELU(W1 x_n + b1) + b2 (hidden ``EvalConfig.probe_hidden``)
to the pz * py * px voxels of its patch, K logits each, unpatchified and cropped to the input
(B, K, D, H, W). Only the head trains; the model is frozen and in eval mode (its tokens are computed
without gradients).

Training. ``probe_steps`` AdamW steps (lr ``probe_lr``, no weight decay) on batches of
``probe_batch_size`` samples of ``probe_split`` drawn by the evaluation sampler (no random crop; in
``whole`` mode the centred ``max_slices``; fresh draws per step, seeded by (step, index)), samples in
a seeded random order, reshuffled each pass. Loss per sample: MONAI ``DiceCELoss(sigmoid=True)`` over
its annotated structures (``mask_available``) and real slices only (``slice_mask``), each structure one
single-channel item, so the CE part is the binary cross-entropy with logits and the Dice is per
structure: L = mean_k [(1 - Dice_k(sigmoid(z_k), y_k)) + BCE(z_k, y_k)]; the batch loss is the mean
over its samples with a structure annotated.

Scoring. A voxel belongs to k when its logit > 0 (sigmoid > 0.5); windows, stitching, real slices and
Dice/HD95 per structure exactly as :mod:`ctvlp.eval.segmentation` (:func:`segment_volumes`,
:func:`summarise`) on ``test_split``'s first ``task_volumes`` volumes.

One probe per (model, cache, settings) is trained in a process (:func:`trained_probe` memoises it), so
``real_masks`` reuses the head ``seg_probe`` trained.
"""

from __future__ import annotations

import json
import time
import weakref
from dataclasses import dataclass

import torch
from monai.losses import DiceCELoss

from ctvlp.data.loader import Collate, split_dataset
from ctvlp.data.sampling import window_depth
from ctvlp.eval.config import EvalConfig
from ctvlp.eval.probe import shuffled_batches
from ctvlp.eval.overlays import OverlayCollector
from ctvlp.eval.segmentation import _split_ids, eval_sampler, segment_volumes, split_mask_names, summarise
from ctvlp.fsutil import jsonable
from ctvlp.models.voxel_head import VoxelHead, VoxelHeadConfig

LOSS = ("MONAI DiceCELoss(sigmoid=True) per structure (single-channel: Dice + BCE with logits) on annotated "
        "structures and real slices, mean over samples")


@dataclass
class Probe:
    """A trained probe head and what it segments."""

    head: VoxelHead
    names: list[str]
    info: dict
    """Training record: ``steps``, ``lr``, ``batch_size``, ``hidden``, ``parameters``, ``split``,
    ``train_volumes``, ``loss_first``, ``loss_last``, ``seconds``."""

    def predictor(self, model, device: torch.device):
        """``predict`` of :func:`~ctvlp.eval.segmentation.segment_volumes` (which runs without gradients):
        logit > 0 per structure."""
        def predict(batch: dict) -> torch.Tensor:
            return self.logits(model, batch["image"].to(device), batch["slice_mask"].to(device)) > 0  # (B, K, D, H, W)
        return predict

    def logits(self, model, image: torch.Tensor, slice_mask: torch.Tensor) -> torch.Tensor:
        """(B, K, D, H, W) logits of the head on the frozen model's tokens."""
        with torch.no_grad():
            out = model.vision(image, slice_mask=slice_mask)
        return self.head(out["tokens"].float(), out["grid"], image.shape[2:])


def _check_tower(model) -> None:
    if not hasattr(model.vision, "cfg") or not hasattr(model.vision.cfg, "patch"):
        raise ValueError("the segmentation probe maps ViT patch tokens to voxels; this model's vision tower has "
                         "no patch grid (a ResNet): use a ViT recipe")


@torch.enable_grad()  # callers may run under no_grad (the evaluator, ctvlp.eval.suite.run_suite, does)
def train_probe(model, cache, cfg: EvalConfig, device: torch.device | str = "cpu", seed: int = 0) -> Probe:
    """Train the probe head of the module docstring on ``cfg.probe_split``."""
    _check_tower(model)
    device = torch.device(device)
    start = time.perf_counter()
    names = split_mask_names(cache, cfg.probe_split, cfg.sampler)
    dataset = split_dataset(cache, eval_sampler(cfg.sampler, names), cfg.probe_split, seed=seed)
    collate = Collate.for_dataset(dataset)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = VoxelHead.for_tower(VoxelHeadConfig(embed_dim=len(names), hidden=cfg.probe_hidden), model.vision)
    head = head.to(device).train()
    probe = Probe(head=head, names=names, info={})
    optimizer = torch.optim.AdamW(head.parameters(), lr=cfg.probe_lr, weight_decay=0.0)
    loss_fn = DiceCELoss(sigmoid=True)
    batches = shuffled_batches(len(dataset), cfg.probe_batch_size, seed)
    losses = []
    was_training = model.training
    model.eval()
    try:
        for step in range(cfg.probe_steps):
            rows = next(batches)
            batch = collate([dataset[(step, i)] for i in rows])
            slice_mask = batch["slice_mask"].to(device)
            logits = probe.logits(model, batch["image"].to(device), slice_mask)  # (B, K, D, H, W)
            terms = []
            for b in range(logits.shape[0]):
                have, real = batch["mask_available"][b].to(device), slice_mask[b]
                if have.any():
                    z = logits[b][have][:, real][:, None]  # (K', 1, D', H, W): one item per structure
                    y = batch["masks"][b].to(device)[have][:, real][:, None].float()
                    terms.append(loss_fn(z, y))
            if not terms:
                continue
            loss = torch.stack(terms).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
    finally:
        model.train(was_training)
    head.eval()
    probe.info = {"steps": cfg.probe_steps, "lr": cfg.probe_lr, "batch_size": cfg.probe_batch_size,
                  "hidden": cfg.probe_hidden, "parameters": sum(p.numel() for p in head.parameters()),
                  "split": cfg.probe_split, "train_volumes": len(dataset), "loss": LOSS,
                  "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
                  "seconds": time.perf_counter() - start}
    return probe


_PROBES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def trained_probe(model, cache, cfg: EvalConfig, device: torch.device | str = "cpu") -> Probe:
    """:func:`train_probe`, once per (model, cache root, probe settings and eval sampler) in this process."""
    key = (str(getattr(cache, "root", id(cache))), cfg.probe_split, cfg.probe_steps, cfg.probe_hidden,
           cfg.probe_lr, cfg.probe_batch_size, repr(cfg.sampler))
    known = _PROBES.setdefault(model, {})
    if key not in known:
        known[key] = train_probe(model, cache, cfg, device)
    return known[key]


def evaluate_seg_probe(model, cache, cfg: EvalConfig, device: torch.device | str = "cpu",
                       probe: Probe | None = None) -> dict:
    """Train (or reuse) the probe and score it on ``cfg.test_split`` (module docstring).

    Returns a JSON-able dict: ``mean_dice``, ``per_structure`` (as ``evaluate_segmentation``), with
    ``cfg.segmentation_hd95`` ``mean_hd95`` and per-structure ``hd95``; ``probe`` (training record),
    ``n_volumes``, ``window``, ``rule``, ``seconds`` and, with ``cfg.overlays > 0``, ``overlays`` (figures of
    the first ``cfg.overlays`` volumes, :mod:`ctvlp.eval.overlays`)."""
    device = torch.device(device)
    probe = trained_probe(model, cache, cfg, device) if probe is None else probe
    start = time.perf_counter()
    ids = _split_ids(cache, cfg.test_split)[:cfg.task_volumes]
    was_training = model.training
    model.eval()
    try:
        drawn = OverlayCollector(probe.names, cfg.overlays, "probe, test volume ")
        scores = segment_volumes(probe.predictor(model, device), {vid: cache.volume(vid) for vid in ids}, cfg.sampler,
                                 probe.names, tuple(cache.config.hu_window), cfg.batch_size, hd95=cfg.segmentation_hd95,
                                 on_volume=drawn)
    finally:
        model.train(was_training)
    metrics = jsonable({**summarise(scores, probe.names, cfg.segmentation_hd95), "probe": probe.info,
                        "n_volumes": len(ids), "window": window_depth(cfg.sampler),
                        "rule": "probe logit > 0 per structure; Dice (and HD95) as the segmentation task",
                        "seconds": time.perf_counter() - start,
                        **({"overlays": drawn.figures} if cfg.overlays > 0 else {})})
    json.dumps(metrics)
    return metrics

