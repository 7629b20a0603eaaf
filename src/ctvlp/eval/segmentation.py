"""Zero-shot segmentation (SegVL, Uniferum): every test volume segmented by its mask names' anchors.

Each structure k becomes the anchor M_k = f_text("This is <name>.") (``model.encode_anchors``, all
names encoded once); a voxel v belongs to k when P_kv = (cos(V_v, M_k) + 1) / 2 > ``threshold``
(:func:`ctvlp.models.voxel_head.zero_shot_segment`), V the model's voxel embeddings
(``model.image_features(image, slice_mask, voxels=True)["voxel_emb"]``).

Which voxels. Pixels go through the training sampler (:func:`ctvlp.data.sampling.draw_sample`: same HU
windows, body channel, centre crop/pad to ``size``, depth padding), so predictions and reference masks
share the sampler's in-plane grid. A volume is read in consecutive z-windows of W slices, W the
sampler's ``chunk_depth`` (``chunk`` mode) or ``max_slices`` (``whole`` mode; None: the whole volume):
starts 0, W, 2W, ... with the last window moved to end at the last slice (it overlaps its predecessor,
whose predictions it overwrites), so every slice is segmented once; a volume not deeper than W is one
window, padded as in training. Only real slices count (``slice_mask``): depth padding is dropped before
scoring, each real slice appearing once.

Metrics, per volume and structure, with MONAI on the stitched (Z, H, W) prediction and reference:

* skipped when the volume does not annotate the structure (``mask_available`` False: not in its
  ``mask_names``) -- an unannotated structure is unknown, never empty;
* Dice = 2 |P n G| / (|P| + |G|) (:func:`monai.metrics.compute_dice`). **Empty reference** (annotated
  but absent, e.g. no nodule): with ``ignore_empty=True`` (MONAI's default) the pair is skipped (Dice
  undefined; counted in ``n_empty``); with ``ignore_empty=False`` empty-vs-empty scores 1 and a
  non-empty prediction of an empty structure 0;
* optionally (``hd95=True``) the symmetric 95th-percentile Hausdorff distance in mm
  (:func:`monai.metrics.compute_hausdorff_distance` with ``percentile=95`` and the volume's (z, y, x)
  spacing), only when both prediction and reference are non-empty (else undefined and skipped).

A structure's ``dice`` is the mean over the volumes that score it (``n`` of them); ``mean_dice`` the
mean over the structures with ``n > 0`` (each structure weighs the same).
"""

from __future__ import annotations

import dataclasses
import json
import time
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance

from ctvlp.data.loader import Collate
from ctvlp.data.preprocess import AIR_HU, window
from ctvlp.data.sampling import BODY, SamplerConfig, VolumeRecord, ZWindow, draw_sample
from ctvlp.errors import BadDatasetError
from ctvlp.eval.metrics import jsonable
from ctvlp.models.voxel_head import zero_shot_segment

RULE = ("P = (cos(voxel embedding, anchor of 'This is <name>.') + 1) / 2 > threshold on the real slices; "
        "Dice per volume and annotated structure (MONAI compute_dice), mean over volumes, then over structures")


def volume_windows(num_slices: int, depth: int | None) -> list[tuple[int, int]]:
    """The ``[z0, z1)`` windows that cover ``num_slices`` slices with windows of ``depth`` slices
    (None: one window): starts 0, depth, 2 depth, ..., the last moved to end at ``num_slices``."""
    if num_slices < 1:
        raise ValueError(f"num_slices must be positive, got {num_slices}")
    if depth is None or num_slices <= depth:
        return [(0, num_slices)]
    if depth < 1:
        raise ValueError(f"depth must be positive, got {depth}")
    starts = list(range(0, num_slices - depth, depth)) + [num_slices - depth]
    return [(s, s + depth) for s in starts]


def window_depth(sampler: SamplerConfig) -> int | None:
    """W: ``chunk_depth`` in ``chunk`` mode, ``max_slices`` (None: whole volume) in ``whole`` mode."""
    return sampler.chunk_depth if sampler.mode == "chunk" else sampler.max_slices


def window_sample(volume, sampler: SamplerConfig, z0: int, z1: int, hu_window: tuple[float, float]) -> dict:
    """The sample of slices ``[z0, z1)`` of ``volume`` (a :func:`volume_windows` window) drawn as in
    training: a chunk of the window's slices, padded to ``chunk_depth`` in ``chunk`` mode."""
    depth = max(z1 - z0, sampler.chunk_depth) if sampler.mode == "chunk" else z1 - z0
    config = dataclasses.replace(sampler, mode="chunk", chunk_depth=depth)
    return draw_sample(VolumeRecord(volume=ZWindow(volume, z0, z1)), config, np.random.default_rng(0), hu_window)


def default_mask_names(cache, split: str, sampler: SamplerConfig) -> list[str]:
    """The sampler's ``mask_names``, else every mask but ``body`` of the split's volumes (first seen first)."""
    if sampler.mask_names:
        return list(sampler.mask_names)
    names: dict[str, None] = {}
    for vid in _split_ids(cache, split):
        names.update((n, None) for n in cache.volume(vid).mask_names if n != BODY)
    return list(names)


def _split_ids(cache, split: str) -> list[str]:
    index = cache.index[cache.index["split"] == split]
    if index.empty:
        known = sorted(map(str, cache.index["split"].unique()))
        raise BadDatasetError(getattr(cache, "root", None),
                              f"segmentation: split {split!r} has no volumes (the cache's splits: {known})")
    return [str(v) for v in index["id"]]


def structure_scores(pred: torch.Tensor, target: torch.Tensor, available: Sequence[bool],
                     spacing: Sequence[float] | None = None, ignore_empty: bool = True,
                     hd95: bool = False) -> list[dict]:
    """Per structure of one volume: pred and target (K, Z, H, W) bool -> K dicts {``dice``, ``hd95``,
    ``empty``}; ``dice`` None when unavailable or (``ignore_empty``) the reference is empty, ``hd95``
    None unless requested and both masks are non-empty (mm when ``spacing`` (z, y, x) is given, else voxels)."""
    if pred.shape != target.shape or pred.ndim != 4 or len(available) != pred.shape[0]:
        raise ValueError(f"pred and target must be (K, Z, H, W) with K availability flags; got "
                         f"{tuple(pred.shape)}, {tuple(target.shape)}, {len(available)}")
    out = []
    for k, have in enumerate(available):
        if not have:
            out.append({"dice": None, "hd95": None, "empty": None})
            continue
        p, g = pred[k][None, None].float(), target[k][None, None].float()  # (1, 1, Z, H, W): one-hot, one class
        empty = not bool(g.any())
        dice = float(compute_dice(p, g, include_background=True, ignore_empty=ignore_empty)[0, 0])
        dist = None
        if hd95 and not empty and bool(p.any()):
            with warnings.catch_warnings():  # MONAI 1.5's deprecation notice from inside its own helper
                warnings.simplefilter("ignore", FutureWarning)
                dist = float(compute_hausdorff_distance(p, g, include_background=True, percentile=95,
                                                        spacing=None if spacing is None else list(map(float, spacing)))[0, 0])
        out.append({"dice": dice if np.isfinite(dice) else None, "hd95": dist, "empty": empty})
    return out



def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


@torch.no_grad()
def evaluate_segmentation(model, cache, sampler_cfg: SamplerConfig, split: str = "test",
                          device: torch.device | str = "cpu", mask_names: Sequence[str] | None = None,
                          threshold: float = 0.5, batch_size: int = 2, max_volumes: int | None = None, *,
                          ignore_empty: bool = True, hd95: bool = False, details: bool = False):
    """Zero-shot segmentation Dice of ``split``'s volumes (see the module docstring for every rule).

    ``model``: a :class:`ctvlp.models.vlp.VisionLanguageModel` with a voxel head (``cfg.seg``);
    ``cache``: a :class:`ctvlp.data.cache.Cache`; ``sampler_cfg``: the training sampler (windows,
    in-plane ``size``, padding, body channel, depth). ``mask_names``: structures to segment (default:
    the sampler's ``mask_names``, else every non-body mask of the split). ``max_volumes``: the first
    volumes of the split only. ``batch_size``: windows per forward pass.

    Returns a JSON-able dict: ``mean_dice`` (None when no structure was scored), ``per_structure``
    {name: {``dice``, ``n`` (volumes scored), ``n_unannotated``, ``n_empty`` (annotated but empty
    reference), and with ``hd95`` ``hd95`` (mm, mean) and ``n_hd95``}}, ``mean_hd95`` (with ``hd95``),
    ``threshold``, ``n_volumes``, ``ignore_empty``, ``window`` (W, None: whole volume), ``rule``,
    ``seconds``. With ``details=True`` returns ``(metrics, {volume id: per-structure score list})``.
    The model is put in eval mode and restored.
    """
    if getattr(getattr(model, "cfg", None), "seg", None) is None:
        raise ValueError("zero-shot segmentation needs a model with a voxel head, and this model has none "
                         "(model.cfg.seg is None): train a recipe that has one (segvl, uniferum) or set "
                         "ModelConfig.seg = VoxelHeadConfig(...) (config key model.seg)")
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold must be in [0, 1), got {threshold}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    device = torch.device(device)
    start = time.perf_counter()
    ids = _split_ids(cache, split)[:max_volumes]
    names = list(mask_names) if mask_names is not None else default_mask_names(cache, split, sampler_cfg)
    if not names:
        raise BadDatasetError(getattr(cache, "root", None),
                              f"segmentation: no mask names given and the volumes of split {split!r} have no "
                              f"mask but body; it needs organ masks (synthetic cohort, RadGenome-ChestCT, "
                              f"TotalSegmentator)")
    sampler = dataclasses.replace(sampler_cfg, random_crop=False, include_masks=True, mask_names=tuple(names),
                                  text="report")
    hu_window = tuple(cache.config.hu_window)
    air = tuple(float(window(np.array(AIR_HU), lo, hi)) for lo, hi in sampler.hu_windows(hu_window))
    collate = Collate(sampler.padding, air + ((-1.0,) if sampler.body_channel else ()))
    depth = window_depth(sampler)

    volumes = {vid: cache.volume(vid) for vid in ids}
    jobs = [(vid, z0, z1) for vid in ids for z0, z1 in volume_windows(volumes[vid].shape[0], depth)]
    order = sorted(range(len(jobs)), key=lambda j: jobs[j][2] - jobs[j][1])  # stable: a volume's windows adjacent
    remaining = {vid: sum(1 for j in jobs if j[0] == vid) for vid in ids}
    pending: dict[str, dict] = {}
    scores: dict[str, list[dict]] = {}

    was_training = model.training
    model.eval()
    try:
        anchors = model.encode_anchors(names).float()  # (K, E), once
        for s in range(0, len(order), batch_size):
            batch_jobs = [jobs[j] for j in order[s:s + batch_size]]
            samples = []
            for vid, z0, z1 in batch_jobs:
                samples.append(window_sample(volumes[vid], sampler, z0, z1, hu_window))
            batch = collate(samples)
            slice_mask = batch["slice_mask"].to(device)
            voxel_emb = model.image_features(batch["image"].to(device), slice_mask, voxels=True)["voxel_emb"]
            pred = zero_shot_segment(voxel_emb.float(), anchors.to(device), threshold).cpu()  # (B, K, D, H, W)
            for b, (vid, z0, z1) in enumerate(batch_jobs):
                real = batch["slice_mask"][b]  # (D,) the first copy of each real slice, in order
                if vid not in pending:
                    z, h, w = volumes[vid].shape[0], *pred.shape[-2:]
                    pending[vid] = {"pred": torch.zeros(len(names), z, h, w, dtype=torch.bool),
                                    "target": torch.zeros(len(names), z, h, w, dtype=torch.bool),
                                    "covered": torch.zeros(z, dtype=torch.bool),
                                    "available": batch["mask_available"][b].tolist(),
                                    "spacing": batch["spacing"][b].tolist()}
                state = pending[vid]
                state["pred"][:, z0:z1] = pred[b][:, real]
                state["target"][:, z0:z1] = batch["masks"][b][:, real]
                state["covered"][z0:z1] = True
                remaining[vid] -= 1
                if remaining[vid] == 0:  # every window of the volume is in: score it, free it
                    state = pending.pop(vid)
                    keep = state["covered"]
                    scores[vid] = structure_scores(state["pred"][:, keep], state["target"][:, keep],
                                                   state["available"], state["spacing"], ignore_empty, hd95)
    finally:
        model.train(was_training)

    per_structure = {}
    for k, name in enumerate(names):
        rows = [scores[vid][k] for vid in ids]
        dice = [r["dice"] for r in rows if r["dice"] is not None]
        entry = {"dice": _mean(dice), "n": len(dice),
                 "n_unannotated": sum(r["empty"] is None for r in rows),
                 "n_empty": sum(r["empty"] is True for r in rows)}
        if hd95:
            dist = [r["hd95"] for r in rows if r["hd95"] is not None and np.isfinite(r["hd95"])]
            entry.update(hd95=_mean(dist), n_hd95=len(dist))
        per_structure[name] = entry
    scored = [e for e in per_structure.values() if e["n"] > 0]
    metrics = {"mean_dice": _mean([e["dice"] for e in scored]), "per_structure": per_structure,
               "threshold": threshold, "n_volumes": len(ids), "ignore_empty": ignore_empty, "window": depth,
               "rule": RULE, "seconds": time.perf_counter() - start}
    if hd95:
        metrics["mean_hd95"] = _mean([e["hd95"] for e in scored if e["hd95"] is not None])
    metrics = jsonable(metrics)
    json.dumps(metrics)  # JSON-able by construction; fail here rather than in the caller's writer
    return (metrics, scores) if details else metrics
