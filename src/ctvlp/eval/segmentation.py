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
from ctvlp.data.sampling import BODY, SamplerConfig, volume_windows, window_depth, window_sample
from ctvlp.errors import BadDatasetError
from ctvlp.eval.overlays import OverlayCollector
from ctvlp.fsutil import jsonable
from ctvlp.models.voxel_head import zero_shot_segment

RULE = ("P = (cos(voxel embedding, anchor of 'This is <name>.') + 1) / 2 > threshold on the real slices; "
        "Dice per volume and annotated structure (MONAI compute_dice), mean over volumes, then over structures")


def default_mask_names(cache, split: str, sampler: SamplerConfig) -> list[str]:
    """The sampler's ``mask_names``, else every mask but ``body`` of the split's volumes (first seen first)."""
    if sampler.mask_names:
        return list(sampler.mask_names)
    names: dict[str, None] = {}
    for vid in _split_ids(cache, split):
        names.update((n, None) for n in cache.volume(vid).mask_names if n != BODY)
    return list(names)


def split_mask_names(cache, split: str, sampler: SamplerConfig, mask_names: Sequence[str] | None = None) -> list[str]:
    """``mask_names`` when given, else :func:`default_mask_names`; BadDatasetError when there is none."""
    names = list(mask_names) if mask_names is not None else default_mask_names(cache, split, sampler)
    if not names:
        raise BadDatasetError(getattr(cache, "root", None),
                              f"segmentation: no mask names given and the volumes of split {split!r} have no "
                              f"mask but body; it needs organ masks (synthetic cohort, RadGenome-ChestCT, "
                              f"TotalSegmentator)")
    return names


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


def eval_sampler(sampler_cfg: SamplerConfig, names: Sequence[str]) -> SamplerConfig:
    """The sampler a segmentation evaluation (or probe) reads with: no random crop, the ``names`` masks."""
    return dataclasses.replace(sampler_cfg, random_crop=False, include_masks=True, mask_names=tuple(names),
                               text="report")


@torch.no_grad()
def segment_volumes(predict, volumes: dict, sampler_cfg: SamplerConfig, names: Sequence[str],
                    hu_window: tuple[float, float], batch_size: int = 2, *, ignore_empty: bool = True,
                    hd95: bool = False, on_volume=None) -> dict[str, list[dict]]:
    """Segment every volume window by window and score it: {volume id: :func:`structure_scores` list}.

    ``predict(batch) -> (B, K, D, H, W) bool`` for the K ``names``, ``batch`` the collated windows
    (``image`` (B, C, D, H, W), ``slice_mask`` (B, D), ``masks`` (B, K, D, H, W) the reference, ...);
    ``volumes`` {id: a :class:`~ctvlp.data.sampling.VolumeSource` (cached or in memory)}; windows,
    padding and stitching as in the module docstring; ``hu_window`` the cache's (the default window).
    ``on_volume(id, image (Z, H, W), pred (K, Z, H, W), target (K, Z, H, W), spacing (z, y, x))``, when
    given, sees each stitched volume (real slices only; image channel 0) before it is freed (e.g.
    :class:`ctvlp.eval.overlays.OverlayCollector`)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    sampler = eval_sampler(sampler_cfg, names)
    air = tuple(float(window(np.array(AIR_HU), lo, hi)) for lo, hi in sampler.hu_windows(tuple(hu_window)))
    collate = Collate(sampler.padding, air + ((-1.0,) if sampler.body_channel else ()))
    depth = window_depth(sampler)
    ids = list(volumes)
    jobs = [(vid, z0, z1) for vid in ids for z0, z1 in volume_windows(volumes[vid].shape[0], depth)]
    order = sorted(range(len(jobs)), key=lambda j: jobs[j][2] - jobs[j][1])  # stable: a volume's windows adjacent
    remaining = {vid: sum(1 for j in jobs if j[0] == vid) for vid in ids}
    pending: dict[str, dict] = {}
    scores: dict[str, list[dict]] = {}
    for s in range(0, len(order), batch_size):
        batch_jobs = [jobs[j] for j in order[s:s + batch_size]]
        batch = collate([window_sample(volumes[vid], sampler, z0, z1, tuple(hu_window)) for vid, z0, z1 in batch_jobs])
        pred = predict(batch).cpu()  # (B, K, D, H, W) bool
        for b, (vid, z0, z1) in enumerate(batch_jobs):
            real = batch["slice_mask"][b]  # (D,) the first copy of each real slice, in order
            if vid not in pending:
                z, h, w = volumes[vid].shape[0], *pred.shape[-2:]
                pending[vid] = {"image": torch.zeros(z, h, w),
                                "pred": torch.zeros(len(names), z, h, w, dtype=torch.bool),
                                "target": torch.zeros(len(names), z, h, w, dtype=torch.bool),
                                "covered": torch.zeros(z, dtype=torch.bool),
                                "available": batch["mask_available"][b].tolist(),
                                "spacing": batch["spacing"][b].tolist()}
            state = pending[vid]
            state["image"][z0:z1] = batch["image"][b][0, real]
            state["pred"][:, z0:z1] = pred[b][:, real]
            state["target"][:, z0:z1] = batch["masks"][b][:, real]
            state["covered"][z0:z1] = True
            remaining[vid] -= 1
            if remaining[vid] == 0:  # every window of the volume is in: score it, free it
                state = pending.pop(vid)
                keep = state["covered"]
                scores[vid] = structure_scores(state["pred"][:, keep], state["target"][:, keep],
                                               state["available"], state["spacing"], ignore_empty, hd95)
                if on_volume is not None:
                    on_volume(vid, state["image"][keep], state["pred"][:, keep], state["target"][:, keep],
                              state["spacing"])
    return scores


def summarise(scores: dict[str, list[dict]], names: Sequence[str], hd95: bool = False) -> dict:
    """Per-volume scores -> ``mean_dice``, ``per_structure`` {name: {``dice``, ``n``, ``n_unannotated``,
    ``n_empty`` [, ``hd95``, ``n_hd95``]}} [and ``mean_hd95``] (means as in the module docstring)."""
    per_structure = {}
    for k, name in enumerate(names):
        rows = [volume[k] for volume in scores.values()]
        dice = [r["dice"] for r in rows if r["dice"] is not None]
        entry = {"dice": _mean(dice), "n": len(dice),
                 "n_unannotated": sum(r["empty"] is None for r in rows),
                 "n_empty": sum(r["empty"] is True for r in rows)}
        if hd95:
            dist = [r["hd95"] for r in rows if r["hd95"] is not None and np.isfinite(r["hd95"])]
            entry.update(hd95=_mean(dist), n_hd95=len(dist))
        per_structure[name] = entry
    scored = [e for e in per_structure.values() if e["n"] > 0]
    out = {"mean_dice": _mean([e["dice"] for e in scored]), "per_structure": per_structure}
    if hd95:
        out["mean_hd95"] = _mean([e["hd95"] for e in scored if e["hd95"] is not None])
    return out


def check_voxel_head(model) -> None:
    """ValueError unless ``model`` has a voxel head (``model.cfg.seg``)."""
    if getattr(getattr(model, "cfg", None), "seg", None) is None:
        raise ValueError("zero-shot segmentation needs a model with a voxel head, and this model has none "
                         "(model.cfg.seg is None): train a recipe that has one (segvl, uniferum) or set "
                         "ModelConfig.seg = VoxelHeadConfig(...) (config key model.seg)")


def anchor_predictor(model, names: Sequence[str], threshold: float, device: torch.device):
    """``predict`` of :func:`segment_volumes` for zero-shot segmentation: P(anchor) > ``threshold``
    (the anchors of ``names`` encoded once)."""
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold must be in [0, 1), got {threshold}")
    anchors = model.encode_anchors(list(names)).float().to(device)  # (K, E), once

    def predict(batch: dict) -> torch.Tensor:
        voxel_emb = model.image_features(batch["image"].to(device), batch["slice_mask"].to(device),
                                         voxels=True)["voxel_emb"]
        return zero_shot_segment(voxel_emb.float(), anchors, threshold)  # (B, K, D, H, W)

    return predict


@torch.no_grad()
def evaluate_segmentation(model, cache, sampler_cfg: SamplerConfig, split: str = "test",
                          device: torch.device | str = "cpu", mask_names: Sequence[str] | None = None,
                          threshold: float = 0.5, batch_size: int = 2, max_volumes: int | None = None, *,
                          ignore_empty: bool = True, hd95: bool = False, overlays: int = 0, details: bool = False):
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
    ``seconds``, and with ``overlays > 0`` ``overlays``: figures of the first ``overlays`` volumes
    (:func:`ctvlp.eval.overlays.overlay_figure`). With ``details=True`` returns ``(metrics, {volume id: per-structure score list})``.
    The model is put in eval mode and restored.
    """
    check_voxel_head(model)
    device = torch.device(device)
    start = time.perf_counter()
    ids = _split_ids(cache, split)[:max_volumes]
    names = split_mask_names(cache, split, sampler_cfg, mask_names)
    was_training = model.training
    model.eval()
    try:
        predict = anchor_predictor(model, names, threshold, device)
        drawn = OverlayCollector(names, overlays, "zero-shot, test volume ")
        scores = segment_volumes(predict, {vid: cache.volume(vid) for vid in ids}, sampler_cfg, names,
                                 tuple(cache.config.hu_window), batch_size, ignore_empty=ignore_empty, hd95=hd95,
                                 on_volume=drawn)
    finally:
        model.train(was_training)
    metrics = {**summarise(scores, names, hd95), "threshold": threshold, "n_volumes": len(ids),
               "ignore_empty": ignore_empty, "window": window_depth(sampler_cfg), "rule": RULE,
               "seconds": time.perf_counter() - start}
    if overlays > 0:
        metrics["overlays"] = drawn.figures
    metrics = jsonable(metrics)
    json.dumps(metrics)  # JSON-able by construction; fail here rather than in the caller's writer
    return (metrics, scores) if details else metrics
