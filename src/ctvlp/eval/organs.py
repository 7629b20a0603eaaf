"""Zero-shot organ classification (SigVLP): which organs does this chunk (or whole volume) contain?

Ground truth comes from the cache's organ masks: each cached volume lists its ``mask_names`` and the
``z_extents`` ``{mask: [z0, z1)}`` of the non-empty ones. Mask names map to the canonical organ ids
of :mod:`ctvlp.data.reports` (``"left lung"`` -> ``lung``); masks that are not organs (``body``,
finding masks such as ``atelectasis``) are ignored. For one volume and one organ:

* no mask of the volume maps to the organ: the label is *unavailable* (never a negative);
* the organ's masks exist but are empty: the organ is absent (label 0) from every chunk;
* else the organ occupies the slices E = union of its masks' extents, and a chunk of real slices
  ``[z0, z1)`` contains it (label 1) by :func:`chunk_contains`.

**Containment rule.** With O = |E ∩ [z0, z1)| the organ's slices inside the chunk and
C = z1 - z0 the chunk's real slices, the chunk contains the organ when
``O > 0 and O >= min_fraction * min(|E|, C)``, i.e. at least ``min_fraction`` of the organ lies in
the chunk (a small organ wholly inside), OR the organ fills at least ``min_fraction`` of the chunk
(a chunk inside a long organ). A sliver at the chunk's edge counts for neither.

Chunks: from each volume of a split, up to ``chunks_per_volume`` evenly spaced ``chunk_depth``-slice
chunks (the sampler's setting; no randomness, so every run sees the same chunks); a volume not
deeper than the chunk gives one chunk, padded as in training. In ``whole`` sampler mode each volume
is one sample (its centred ``max_slices``). Pixels go through the training sampler
(:func:`ctvlp.data.sampling.draw_sample`: same windows, in-plane size and depth padding, centre
crop). Every chunk is encoded once, every prompt once; the score of organ o in chunk n is the
softmax over o's (positive, negative) prompt pair (:func:`ctvlp.models.prompting.zero_shot_scores`),
and the metrics follow :func:`ctvlp.eval.zeroshot.evaluate_zero_shot`: per organ, the F1 threshold
is chosen on the validation split's chunks and applied to the test split's.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence

import numpy as np
import torch

from ctvlp.data.loader import Collate
from ctvlp.data.preprocess import AIR_HU, window
from ctvlp.data.prompts import PromptSet, PromptStyle, build_prompts
from ctvlp.data.reports import ORGANS, canonical_organ
from ctvlp.data.sampling import SamplerConfig, window_sample
from ctvlp.errors import BadDatasetError
from ctvlp.eval.zeroshot import evaluate_zero_shot
from ctvlp.fsutil import jsonable
from ctvlp.models.prompting import encode_texts, zero_shot_scores

DEFAULT_STYLE = "organs"
"""Prompt style in ``prompts.yaml``: "This region contains the {label}." / "... does not contain ..."."""

RULE = ("a chunk [z0, z1) contains an organ when O > 0 and O >= min_fraction * min(|E|, z1 - z0), "
        "E the organ's slices (union of its masks' z-extents), O = |E within [z0, z1)|")


def organ_extents(mask_names: Sequence[str], z_extents: dict[str, Sequence[int]]) -> dict[str, list[tuple[int, int]]]:
    """organ id -> the ``[z0, z1)`` extents of the volume's masks of that organ (``[]``: the masks
    exist but are empty, so the organ is absent). Organs without a mask are not keys (unavailable)."""
    out: dict[str, list[tuple[int, int]]] = {}
    for name in mask_names:
        organ = canonical_organ(name)  # None: not an organ (body, finding masks)
        if organ is None:
            continue
        out.setdefault(organ, [])
        if name in z_extents:
            z0, z1 = (int(v) for v in z_extents[name])
            if z1 > z0:
                out[organ].append((z0, z1))
    return out


def _covered(extents: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Disjoint sorted intervals covering the union of ``extents``."""
    merged: list[list[int]] = []
    for z0, z1 in sorted(extents):
        if merged and z0 <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], z1)
        else:
            merged.append([z0, z1])
    return [(a, b) for a, b in merged]


def chunk_contains(extents: Sequence[tuple[int, int]], z0: int, z1: int, min_fraction: float = 0.5) -> bool:
    """Whether the chunk of slices ``[z0, z1)`` contains the organ occupying the union of ``extents``.

    True when O > 0 and O >= ``min_fraction`` * min(|E|, z1 - z0) (module docstring), E the organ's
    slices and O how many of them lie in the chunk. ``min_fraction`` 0 means any overlap.
    """
    if not 0.0 <= min_fraction <= 1.0:
        raise ValueError(f"min_fraction must be in [0, 1], got {min_fraction}")
    if z1 <= z0:
        raise ValueError(f"empty chunk [{z0}, {z1})")
    covered = _covered(extents)
    size = sum(b - a for a, b in covered)
    overlap = sum(max(0, min(b, z1) - max(a, z0)) for a, b in covered)
    return overlap > 0 and overlap >= min_fraction * min(size, z1 - z0)


def chunk_ranges(num_slices: int, sampler: SamplerConfig, chunks_per_volume: int) -> list[tuple[int, int]]:
    """The ``[z0, z1)`` real-slice ranges read from a volume of ``num_slices`` slices.

    ``chunk`` mode: up to ``chunks_per_volume`` distinct starts evenly spaced over
    ``[0, num_slices - chunk_depth]`` (one centred chunk when ``chunks_per_volume`` is 1; the whole
    volume once when it is not deeper than the chunk). ``whole`` mode: the centred ``max_slices``.
    """
    if chunks_per_volume < 1:
        raise ValueError(f"chunks_per_volume must be positive, got {chunks_per_volume}")
    if sampler.mode == "whole":
        keep = min(num_slices, sampler.max_slices or num_slices)
        z0 = (num_slices - keep) // 2
        return [(z0, z0 + keep)]
    depth = sampler.chunk_depth
    if num_slices <= depth:
        return [(0, num_slices)]
    last = num_slices - depth
    if chunks_per_volume == 1:
        starts = [last // 2]
    else:
        starts = sorted({int(round(s)) for s in np.linspace(0, last, chunks_per_volume)})
    return [(s, s + depth) for s in starts]


@dataclasses.dataclass
class OrganChunks:
    """The chunks of one split and their organ labels."""

    ids: list[str]
    """(N,) volume id of each chunk."""
    ranges: list[tuple[int, int]]
    """(N,) real slices ``[z0, z1)`` of each chunk."""
    labels: np.ndarray
    """(N, L) float 0/1 (0 where unavailable)."""
    available: np.ndarray
    """(N, L) bool: the chunk's volume has a mask of the organ."""


def _split_volumes(cache, split: str) -> list[tuple[object, dict[str, list[tuple[int, int]]]]]:
    """(cached volume, :func:`organ_extents`) of every volume of ``split``; BadDatasetError when the
    split has no volume or not one organ z-extent."""
    index = cache.index[cache.index["split"] == split]
    if index.empty:
        known = sorted(map(str, cache.index["split"].unique()))
        raise BadDatasetError(cache.root, f"organ classification: split {split!r} has no volumes "
                                          f"(the cache's splits: {known})")
    volumes = [cache.volume(vid) for vid in index["id"]]
    extents = [organ_extents(v.mask_names, v.z_extents) for v in volumes]
    if not any(e for per_volume in extents for e in per_volume.values()):
        masks = sorted({n for v in volumes for n in v.mask_names})
        raise BadDatasetError(
            cache.root, f"organ classification: no volume of split {split!r} ({len(volumes)} volumes) has an "
                        f"organ z-extent; their masks ({', '.join(masks[:12]) or 'none'}) include no "
                        f"non-empty mask of an organ ({', '.join(ORGANS)}). It needs organ masks "
                        f"(synthetic cohort, RadGenome-ChestCT, TotalSegmentator)")
    return list(zip(volumes, extents))


def _present(*splits: list) -> list[str]:
    """Organs with a mask in any volume of the splits: lexicon order, then unknown ids sorted."""
    present = {o for split in splits for _, per_volume in split for o in per_volume}
    return [o for o in ORGANS if o in present] + sorted(present - set(ORGANS))


def _label_chunks(volumes: list, organs: Sequence[str], sampler: SamplerConfig, chunks_per_volume: int,
                  min_fraction: float) -> OrganChunks:
    ids, ranges, rows, avail = [], [], [], []
    for volume, per_volume in volumes:
        for z0, z1 in chunk_ranges(volume.shape[0], sampler, chunks_per_volume):
            ids.append(volume.vid)
            ranges.append((z0, z1))
            avail.append([o in per_volume for o in organs])
            rows.append([o in per_volume and chunk_contains(per_volume[o], z0, z1, min_fraction) for o in organs])
    shape = (len(ids), len(organs))
    return OrganChunks(ids, ranges, np.array(rows, np.float64).reshape(shape), np.array(avail, bool).reshape(shape))


def split_chunks(cache, split: str, sampler: SamplerConfig, organs: Sequence[str] | None = None,
                 chunks_per_volume: int = 4, min_fraction: float = 0.5) -> tuple[OrganChunks, list[str]]:
    """The chunks of ``split`` with their labels, and the organs: ``organs``, or when None every organ
    with a mask in the split. BadDatasetError when the split has no volume or no organ extent."""
    volumes = _split_volumes(cache, split)
    organs = _present(volumes) if organs is None else list(organs)
    return _label_chunks(volumes, organs, sampler, chunks_per_volume, min_fraction), organs


def _eval_sampler(sampler: SamplerConfig) -> SamplerConfig:
    """The sampler for evaluation: centre crop, no masks (the text part is unused)."""
    return dataclasses.replace(sampler, random_crop=False, include_masks=False, mask_names=None, text="report")


@torch.no_grad()
def encode_chunks(model, cache, chunks: OrganChunks, sampler: SamplerConfig, device: torch.device | str = "cpu",
                  batch_size: int = 4) -> torch.Tensor:
    """(N, D) image embeddings of the chunks, each encoded once, in batches of ``batch_size``.

    Each chunk is drawn by :func:`draw_sample` from its slices alone, so it is padded to
    ``chunk_depth`` (``chunk`` mode) exactly as in training; ``whole`` mode batches volumes of
    similar depth and pads each batch to its deepest member, as :mod:`ctvlp.data.loader` does.
    """
    device = torch.device(device)
    sampler = _eval_sampler(sampler)
    hu_window = tuple(cache.config.hu_window)
    collate = Collate(sampler.padding, tuple(float(window(np.array(AIR_HU), lo, hi))
                                             for lo, hi in sampler.hu_windows(hu_window)))
    depths = np.array([z1 - z0 for z0, z1 in chunks.ranges])
    order = np.argsort(depths, kind="stable") if sampler.mode == "whole" else np.arange(len(depths))
    out: torch.Tensor | None = None
    volumes: dict[str, object] = {}
    for start in range(0, len(order), batch_size):
        samples = []
        for n in order[start:start + batch_size]:
            vid, (z0, z1) = chunks.ids[n], chunks.ranges[n]
            if vid not in volumes:
                volumes[vid] = cache.volume(vid)
            samples.append(window_sample(volumes[vid], sampler, z0, z1, hu_window))
        batch = collate(samples)
        emb = model.encode_image(batch["image"].to(device), batch["slice_mask"].to(device)).float().cpu()
        if out is None:
            out = emb.new_zeros(len(order), emb.shape[1])
        out[torch.as_tensor(order[start:start + batch_size])] = emb
    if out is None:
        raise ValueError("no chunks to encode")
    return out






@torch.no_grad()
def evaluate_organs(model, cache, sampler_cfg: SamplerConfig, val_split: str = "valid", test_split: str = "test",
                    device: torch.device | str = "cpu", *, chunks_per_volume: int = 4, min_fraction: float = 0.5,
                    organs: Sequence[str] | None = None, prompt_style: str | PromptStyle = DEFAULT_STYLE,
                    prompts: PromptSet | None = None, batch_size: int = 4, details: bool = False):
    """Zero-shot organ classification of ``test_split``'s chunks, thresholds from ``val_split``'s.

    ``model`` has ``encode_image(image, slice_mask)``, ``encode_texts(texts)`` and ``scale()``
    (a :class:`ctvlp.models.vlp.VisionLanguageModel`); ``cache`` a :class:`ctvlp.data.cache.Cache`;
    ``sampler_cfg`` the training sampler (its ``chunk_depth``, windows, in-plane ``size``, padding;
    ``whole`` mode scores whole volumes instead). ``organs``: canonical organ ids to score (default:
    every organ with a mask in the validation or test split). ``prompt_style``: a style name in
    ``prompts`` (default the packaged ``prompts.yaml``) or a :class:`PromptStyle`.

    Returns a JSON-able dict: ``mean_auroc``, ``mean_f1``, ``mean_precision``, ``mean_recall``,
    ``mean_accuracy``, ``mean_balanced_accuracy`` (over ``organs_in_mean``), ``organs``,
    ``organs_in_mean``, ``excluded`` {organ: why it is not in the means}, ``per_organ`` {organ:
    {auroc, f1, precision, recall, accuracy, balanced_accuracy, threshold, n_pos, n, val_n_pos,
    val_n}} (undefined values are None: AUROC when the test chunks of the organ are all one class,
    the threshold and F1 family when no validation chunk contains it), ``n_chunks`` and
    ``n_val_chunks``, ``n_volumes`` {val, test}, ``chunk_depth`` (None in ``whole`` mode),
    ``chunks_per_volume``, ``min_fraction``, ``rule``, ``prompt_style``, ``seconds``. With
    ``details=True`` returns ``(metrics, test OrganChunks, test scores (N, L))``. The model is put
    in eval mode and restored.
    """
    device = torch.device(device)
    start = time.perf_counter()
    val_volumes, test_volumes = _split_volumes(cache, val_split), _split_volumes(cache, test_split)
    organs = _present(val_volumes, test_volumes) if organs is None else list(organs)
    if not organs:
        raise ValueError("organs must not be empty")
    val = _label_chunks(val_volumes, organs, sampler_cfg, chunks_per_volume, min_fraction)
    test = _label_chunks(test_volumes, organs, sampler_cfg, chunks_per_volume, min_fraction)
    texts, prompt_index = build_prompts(organs, prompt_style, prompts)
    was_training = model.training
    model.eval()
    try:
        val_emb = encode_chunks(model, cache, val, sampler_cfg, device, batch_size)
        test_emb = encode_chunks(model, cache, test, sampler_cfg, device, batch_size)
        pos, neg = prompt_index.pool(encode_texts(model, texts))
        scale = float(model.scale())
    finally:
        model.train(was_training)
    encoded = time.perf_counter()
    scores_val = zero_shot_scores(val_emb, pos, neg, scale).numpy()  # (N_val, L)
    scores_test = zero_shot_scores(test_emb, pos, neg, scale).numpy()  # (N_test, L)
    result = evaluate_zero_shot(scores_val, val.labels, val.available, scores_test, test.labels,
                                test.available, organs)
    per_organ = result.pop("per_label")
    for j, organ in enumerate(organs):
        per_organ[organ]["val_n_pos"] = int(val.labels[val.available[:, j], j].sum())
        per_organ[organ]["val_n"] = int(val.available[:, j].sum())
        if organ in result["excluded"] and per_organ[organ]["n"] == 0:
            result["excluded"][organ] = "no test volume has a mask of it"
    in_mean = result.pop("labels_in_mean")
    metrics = {**result, "organs_in_mean": in_mean, "organs": organs, "per_organ": per_organ,
               "n_chunks": len(test.ids), "n_val_chunks": len(val.ids),
               "n_volumes": {"val": len(set(val.ids)), "test": len(set(test.ids))},
               "chunk_depth": sampler_cfg.chunk_depth if sampler_cfg.mode == "chunk" else None,
               "chunks_per_volume": chunks_per_volume, "min_fraction": min_fraction, "rule": RULE,
               "prompt_style": prompt_style if isinstance(prompt_style, str) else "custom",
               "seconds": {"encode": encoded - start, "total": time.perf_counter() - start}}
    metrics = jsonable(metrics)
    json.dumps(metrics)  # JSON-able by construction; fail here rather than in the caller's writer
    return (metrics, test, scores_test) if details else metrics
