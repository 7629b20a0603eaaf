"""Slice-count robustness: every evaluation metric again as the number of input slices shrinks.

A cell (n, padding) of the grid ``EvalConfig.robustness_counts`` x ``EvalConfig.robustness_paddings``
re-runs the evaluation it is given (``evaluate``: the one evaluator, :func:`ctvlp.eval.suite.evaluate_cell`,
zero-shot and retrieval at volume and scan level without intervals, plus the repeated tasks) unchanged
with one change to the evaluation sampler:

1. **Keep the n centred slices** of each volume: ``max_slices = min(n, max_slices of the eval
   sampler)`` (``whole`` mode reads slices ``[(Z - k) // 2, (Z - k) // 2 + k)``, k = min(n, Z, max_slices)).
   n = 0 means *all*: the eval sampler's own ``max_slices``. A volume with fewer than n slices keeps
   all of them.
2. **Pad the depth up to D** with ``padding`` (``SamplerConfig.min_depth = D``; :func:`ctvlp.data.sampling.pad_index`):
   ``repeat`` maps output slice i to kept slice floor(i k / D) (one slice becomes D copies);
   ``zero`` appends D - k slices of air (-1000 HU before windowing, the windowed value of air after).
   A volume already deeper than D is unchanged. ``slice_mask`` marks the k real slices either way,
   so attention pooling and the ViT's token mask see the same real slices under both paddings.

**D**, the depth the model was trained on: ``EvalConfig.robustness_depth`` when set (chunk-sampled
recipes -- demo, sigvlp, scalevlp -- set it to their ``chunk_depth``); None: the smallest depth the
vision tower accepts, one token row (the ViT's z patch ``pz``; the ResNet's total z stride).

Everything else is the evaluation as configured: thresholds of zero-shot classification are chosen on
``val_split`` read with the same (n, padding) sampler, retrieval and the per-volume tasks use the test
split. Of ``EvalConfig.tasks`` the cells repeat :data:`SLICE_TASKS`: ``segmentation`` (windows of n
slices, each padded to D, scored on the real slices only), ``generation`` (reports decoded from n
slices) and ``organs`` (chunks of min(n, ``organ_chunk_depth``) slices padded to D; ``all``: the
configured chunks, padded to D). ``seg_probe``, ``real_masks`` and ``robustness`` itself are not repeated.

**Linear probe** (``EvalConfig.robustness_probe``): the logistic regressions of :mod:`ctvlp.eval.probe`
are fitted once, on the whole-volume embeddings of ``probe_split`` with C chosen on ``val_split``
(the eval sampler as configured), and every cell scores its own test embeddings with them: how a
classifier built on full scans holds up on thin inputs. A cell's ``probe`` has ``mean_auroc`` (over
the labels fitted and defined on test) and ``per_label`` AUROCs.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from ctvlp.data.manifest import label_names_of
from ctvlp.data.sampling import SamplerConfig
from ctvlp.eval.config import EvalConfig
from ctvlp.eval.metrics import auroc
from ctvlp.eval.probe import FittedProbes, Split, fit_probes
from ctvlp.eval.run import Encoded, encode_split
from ctvlp.fsutil import jsonable

SLICE_TASKS = ("segmentation", "generation", "organs")
"""Extra tasks whose input shrinks with n, repeated in every cell."""

ALL = 0
"""The slice count meaning "every slice the eval sampler keeps"."""

CellEvaluator = Callable[..., tuple[dict, Encoded]]
"""(model, cache, cell's EvalConfig, device) -> (the cell's metrics in metrics.json's layout, its test split
encoded): the evaluation a cell re-runs, passed in by the evaluator that dispatches to this task (so that this
module does not import the evaluator above it)."""


def tower_min_depth(model) -> int:
    """The smallest depth the vision tower takes as one token row: the ViT's z patch, the ResNet's z stride."""
    vision = model.cfg.vision
    return int(vision.patch[0]) if hasattr(vision, "patch") else int(vision.stride[0])


def robustness_sampler(sampler: SamplerConfig, count: int, padding: str, depth: int) -> SamplerConfig:
    """The eval sampler reading the ``count`` centred slices (0: as configured), padded up to ``depth``."""
    if sampler.mode != "whole":
        raise ValueError(f"slice-count robustness needs a 'whole'-mode eval sampler, got mode {sampler.mode!r}")
    if count < 0 or depth < 1:
        raise ValueError(f"count must be >= 0 (0: all) and depth >= 1, got {count}, {depth}")
    keep = sampler.max_slices if count == ALL else min(count, sampler.max_slices or count)
    return dataclasses.replace(sampler, max_slices=keep, padding=padding, min_depth=depth)


def cell_name(count: int, padding: str) -> str:
    """``"<n>/<padding>"``, n ``all`` for 0."""
    return f"{'all' if count == ALL else count}/{padding}"


def summary_row(count: int, padding: str, max_slices: int | None, metrics: dict) -> dict:
    """One table row: n, padding, ``max_slices`` (the slices actually kept, None: all), mean AUROC, R@5 both
    ways, and the headline of the probe and of each repeated task."""
    retrieval = metrics["retrieval"]["volume"]
    row = {"n": "all" if count == ALL else count, "padding": padding, "max_slices": max_slices,
           "mean_auroc": metrics["zeroshot"]["volume"]["mean_auroc"],
           "r5_volume_to_report": retrieval["volume_to_report"]["recall@5"],
           "r5_report_to_volume": retrieval["report_to_volume"]["recall@5"]}
    if "probe" in metrics:
        row["probe_auroc"] = metrics["probe"]["mean_auroc"]
    if "organs" in metrics:
        row["organ_auroc"] = metrics["organs"]["mean_auroc"]
    if "segmentation" in metrics:
        row["mean_dice"] = metrics["segmentation"]["mean_dice"]
    if "generation" in metrics:
        row.update(bleu4=metrics["generation"]["bleu4"], label_f1_micro=metrics["generation"]["label_f1_micro"])
    return row


@torch.no_grad()
def whole_volume_probes(model, cache, cfg: EvalConfig, device: torch.device | str = "cpu") -> FittedProbes:
    """The linear probes of every cache label fitted on ``cfg.probe_split``'s whole-volume embeddings, C on
    ``cfg.val_split``'s (the eval sampler as configured; the model in eval mode, restored)."""
    was_training = model.training
    model.eval()
    try:
        train, val = (encode_split(model, cache, cfg, split, torch.device(device)) for split in (cfg.probe_split, cfg.val_split))
    finally:
        model.train(was_training)
    return fit_probes(*(Split(e.image_emb.numpy(), e.labels, e.available) for e in (train, val)),
                      label_names_of(cache.index.columns))


def probe_metrics(probes: FittedProbes, test: Encoded) -> dict:
    """``per_label`` test AUROC of each fitted probe (None: one class on test) and their ``mean_auroc``."""
    scores = probes.scores(test.image_emb.numpy())  # (N, L)
    per_label = {name: auroc(scores[:, j], test.labels[:, j], test.available[:, j])
                 for j, name in enumerate(probes.label_names) if name in probes.models}
    defined = [v for v in per_label.values() if np.isfinite(v)]
    return {"mean_auroc": float(np.mean(defined)) if defined else None, "per_label": per_label}


@torch.no_grad()
def evaluate_robustness(model, cache, cfg: EvalConfig, evaluate: CellEvaluator, device: torch.device | str = "cpu",
                        counts: Sequence[int] | None = None, paddings: Sequence[str] | None = None,
                        depth: int | None = None) -> dict:
    """Every metric of ``evaluate`` per (slice count, padding) cell (module docstring).

    ``cfg``: the :class:`~ctvlp.eval.config.EvalConfig`; ``counts``, ``paddings``, ``depth`` default to
    its ``robustness_counts``, ``robustness_paddings`` and ``robustness_depth`` (None: the tower's smallest depth).

    Returns a JSON-able dict: ``counts`` (0 shown as ``"all"``), ``paddings``, ``depth`` (D), ``depth_rule``,
    ``tasks`` (the extra tasks repeated), ``results`` {``"<n>/<padding>"``: the cell's metrics (metrics.json's
    layout, docs/eval-metrics.md)},
    ``summary`` (one :func:`summary_row` per cell, in grid order) and ``seconds``. With
    ``cfg.robustness_probe`` each cell also has ``probe`` (:func:`probe_metrics`).
    """
    start = time.perf_counter()
    counts = list(cfg.robustness_counts if counts is None else counts)
    paddings = list(cfg.robustness_paddings if paddings is None else paddings)
    given = cfg.robustness_depth if depth is None else depth
    depth = tower_min_depth(model) if given is None else int(given)
    rule = ("eval.robustness_depth (the depth the model trained on)" if given is not None
            else "the vision tower's smallest depth (one z token row)")
    tasks = tuple(t for t in cfg.tasks if t in SLICE_TASKS)
    probes = whole_volume_probes(model, cache, cfg, device) if cfg.robustness_probe else None
    results, summary = {}, []
    for count in counts:
        for padding in paddings:
            sampler = robustness_sampler(cfg.sampler, count, padding, depth)
            chunk = cfg.organ_chunk_depth if count == ALL else min(count, cfg.organ_chunk_depth)
            cell = dataclasses.replace(cfg, sampler=sampler, tasks=tasks, organ_chunk_depth=chunk,
                                       overlays=0)  # figures once, not per cell
            metrics, test = evaluate(model, cache, cell, device)
            if probes is not None:
                metrics["probe"] = probe_metrics(probes, test)
            results[cell_name(count, padding)] = metrics
            summary.append(summary_row(count, padding, sampler.max_slices, metrics))
    return jsonable({"counts": ["all" if n == ALL else n for n in counts], "paddings": paddings, "depth": depth,
                     "depth_rule": rule, "tasks": list(tasks), "results": results, "summary": summary,
                     "seconds": time.perf_counter() - start})
