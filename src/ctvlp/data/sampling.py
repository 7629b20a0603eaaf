"""Samplers: one training sample (image + text + labels + masks) from one cached volume.

Two modes (:class:`SamplerConfig`):

* ``whole``: the whole volume (optionally the centred ``max_slices``); depth varies per volume and the
  collate (``ctvlp.data.loader``) pads a batch to its deepest member.
* ``chunk``: ``chunk_depth`` consecutive slices from a seeded random z-start, with the organ-wise
  sentences of the organs whose z-extent ``[z0, z1)`` overlaps the chunk: from the organ's masks where
  the volume has organ masks, else (``SamplerConfig.organ_z_prior``) from :data:`ORGAN_Z_PRIOR`,
  METHODS.md's z-prior (SigVLP) for a dataset without organ masks such as plain CT-RATE.

Depth padding: one function, :func:`pad_depth` (index map :func:`pad_index`), run once per sample. The
sampler pads a sample to its depth (``chunk_depth``, ``min_depth``) or, when the batch sampler asks
(training: :class:`ctvlp.data.loader.SampleKey`'s ``depth``), to its batch's deepest member, so that the
training collate only stacks; the collate pads the samples of callers that batch unpadded samples of
several depths (evaluation) with the same function, and refuses to pad a sample twice.

* ``repeat``: index map ``floor(arange(C) * n / C)``: the order is kept and each slice appears about
  ``C / n`` times (one slice becomes C copies).
* ``zero``: the ``n`` real slices, then padding slices filled with air: -1000 HU *before* windowing,
  i.e. the windowed value of air (-1 for the default window), never a literal 0. Masks pad with False.

Either way ``slice_mask`` marks the real slices: with ``repeat`` padding it is True at the first copy
of each slice, so ``slice_mask.sum()`` is always the number of distinct real slices.

Body channel (``SamplerConfig.body_channel``, Uniferum's optional input): the body mask as one more
channel after the HU windows, +1 inside the body and -1 outside. -1 is also air's value in every window
channel, so a ``zero``-padded slice or an in-plane pad is "air, outside the body" in every channel;
``repeat`` padding repeats the mask with its slice.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from ctvlp.data.preprocess import AIR_HU, PreprocessConfig, body_mask, window
from ctvlp.data.reports import canonical_organ, split_sentences, structure_report
from ctvlp.data.volumes import VolumeSource, ZWindow


ORGAN_Z_PRIOR: dict[str, tuple[float, float]] = {
    "abdomen": (0.0, 0.3),
    "aorta": (0.0, 0.85),
    "esophagus": (0.0, 1.0),
    "bone": (0.0, 1.0),
    "lung": (0.0, 0.95),
    "pleura": (0.0, 0.95),
    "heart": (0.15, 0.55),
    "pericardium": (0.15, 0.55),
    "mediastinum": (0.1, 0.95),
    "breast": (0.3, 0.75),
    "trachea_bronchi": (0.4, 1.0),
    "thyroid": (0.9, 1.0),
}
"""Where each organ of the report parser (``ctvlp.data.reports``' canonical ids) lies along z in a chest
CT, as ``[f0, f1)`` fractions of the volume's slices from its inferior end (the cache is RAS: slice 0 is
the most inferior) [ours, METHODS.md's z-prior; the paper uses masks]: a chest CT runs from the upper
abdomen to the thoracic inlet, the lung bases (costophrenic recesses) reach its lower end, the heart
fills the lower half of the thorax, the trachea its upper half down to the carina, the thyroid the
top slices; the aorta (descending into the abdomen, arch and great vessels near the top), the
oesophagus and the bones run through. Bounds are generous: an organ counts where a chunk may hold it.
``other`` has no place and gets no prior."""


@dataclass
class SamplerConfig:
    """How a sample is drawn from a cached volume."""

    mode: Literal["whole", "chunk"] = "chunk"
    """``whole``: the whole volume (variable depth); ``chunk``: ``chunk_depth`` consecutive slices."""
    chunk_depth: int = 32
    """Slices per chunk (C) in ``chunk`` mode."""
    padding: Literal["repeat", "zero"] = "repeat"
    """Depth padding when a volume has fewer slices than needed (see the module docstring)."""
    size: tuple[int, int] | None = None
    """In-plane (H, W) after centre crop / pad with air; None keeps the cached (Y, X)."""
    random_crop: bool = False
    """Train-time option: crop in-plane at a seeded random offset instead of the centre."""
    windows: tuple[tuple[float, float], ...] | None = None
    """HU windows (lo, hi), each mapped to [-1, 1] as one input channel, e.g. ``((-1000, 1000),
    (-1000, -500))`` adds a lung window in which emphysema and ground glass stand out; None: one
    channel at the cache's ``hu_window``. The vision tower's ``in_chans`` must equal their number."""
    max_slices: int | None = None
    """``whole`` mode: keep at most this many slices (the centred ones); None keeps all."""
    min_depth: int | None = None
    """Pad every sample up to at least this many slices with ``padding`` (both modes: a volume or chunk
    of n < ``min_depth`` slices becomes ``min_depth`` slices, as :func:`pad_index` maps them); None: no
    minimum. Evaluation's slice-count robustness feeds n centred slices to a model trained on D slices
    this way (``ctvlp.eval.robustness``)."""
    include_masks: bool = False
    """Return the masks of the sampled slices as ``masks`` (M, D, H, W) bool."""
    mask_names: tuple[str, ...] | None = None
    """Which masks (fixed order, absent ones are all False with ``mask_available`` False);
    None: every mask of the volume (batching then needs the same names in every volume)."""
    text: Literal["report", "organs", "structured"] = "organs"
    """``report``: findings + impressions; ``organs``: sentences of the organs in the sampled slices;
    ``structured``: the findings rewritten into organ sections with positive and negative findings
    (``reports.structure_report``, COLIPRI), then the impressions."""
    organ_z_prior: bool = True
    """``organs`` text on a volume without organ masks (a dataset such as plain CT-RATE): its organs are
    placed along z by :data:`ORGAN_Z_PRIOR` (fractions of the volume's depth); False: no organ is in
    any of its chunks, which then fall back to the impressions or the whole report. A volume with organ
    masks uses them alone either way."""
    body_channel: bool = False
    """Append the body mask as the last input channel: +1 inside, -1 outside (see the module docstring).
    From the cache's ``body`` mask (``prepare`` stores it for every volume); a volume without one gets
    ``preprocess.body_mask`` of the sampled slab at the default ``body_threshold``."""

    def __post_init__(self) -> None:
        if self.mode not in ("whole", "chunk"):
            raise ValueError(f"mode must be 'whole' or 'chunk', got {self.mode!r}")
        if self.padding not in ("repeat", "zero"):
            raise ValueError(f"padding must be 'repeat' or 'zero', got {self.padding!r}")
        if self.text not in ("report", "organs", "structured"):
            raise ValueError(f"text must be 'report', 'organs' or 'structured', got {self.text!r}")
        if self.chunk_depth < 1 or any(v is not None and v < 1 for v in (self.max_slices, self.min_depth)):
            raise ValueError(f"chunk_depth, max_slices and min_depth must be positive, got {self.chunk_depth}, "
                             f"{self.max_slices}, {self.min_depth}")
        if self.size is not None:
            self.size = (int(self.size[0]), int(self.size[1]))
        if self.mask_names is not None:
            self.mask_names = tuple(self.mask_names)
        if self.windows is not None:
            self.windows = tuple((float(lo), float(hi)) for lo, hi in self.windows)
            if not self.windows or any(lo >= hi for lo, hi in self.windows):
                raise ValueError(f"windows must be non-empty (lo, hi) pairs with lo < hi, got {self.windows}")

    @property
    def channels(self) -> int:
        """Input channels of a sample's image (one per HU window, plus the body channel if set)."""
        return (len(self.windows) if self.windows else 1) + int(self.body_channel)

    def hu_windows(self, cache_window: tuple[float, float]) -> tuple[tuple[float, float], ...]:
        """The windows, or the cache's one when none are set."""
        return self.windows or (tuple(cache_window),)


@dataclass
class VolumeRecord:
    """One index row's worth of what a sample needs besides the pixels."""

    volume: VolumeSource
    findings: str = ""
    impressions: str = ""
    organ_sentences: dict[str, list[str]] = field(default_factory=dict)
    """organ id -> sentences (same canonical ids as the mask names in ``z_extents``)."""
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    """(K,) float32, 0 where not available."""
    label_mask: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    """(K,) bool availability."""


def pad_index(n: int, depth: int, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Index map from ``depth`` output slices to ``n <= depth`` input slices, and the real-slice mask.

    ``repeat``: ``floor(arange(depth) * n / depth)``; ``zero``: ``0..n-1`` then -1 (a padding slice).
    """
    if not 1 <= n <= depth:
        raise ValueError(f"pad_index needs 1 <= n <= depth, got n={n}, depth={depth}")
    if mode == "repeat":
        idx = np.arange(depth) * n // depth  # (depth,)
        real = np.ones(depth, bool)
        real[1:] = idx[1:] != idx[:-1]  # first copy of each slice
        return idx, real
    idx = np.full(depth, -1)
    idx[:n] = np.arange(n)
    return idx, idx >= 0


def air_values(config: SamplerConfig, hu_window: tuple[float, float]) -> tuple[float, ...]:
    """Each input channel's value of air (-1000 HU): the windowed air per HU window, then -1 (outside)
    for the body channel."""
    air = tuple(float(window(np.array(AIR_HU), lo, hi)) for lo, hi in config.hu_windows(hu_window))
    return air + ((-1.0,) if config.body_channel else ())


def pad_depth(sample: dict, depth: int, padding: str, air: Sequence[float]) -> dict:
    """``sample`` with its ``image`` (C, n, H, W) (and ``masks`` (M, n, H, W)) padded along depth from its
    n real slices to ``depth`` (:func:`pad_index`; air per channel in ``air``, masks False) and its
    ``slice_mask`` marking the real slices; the sample itself when it already has ``depth`` slices. A
    sample padded before (``slice_mask`` not all True) cannot be padded again: ValueError."""
    n = int(sample["slice_mask"].sum())
    if sample["image"].shape[1] == depth:
        return sample
    if n != sample["image"].shape[1]:
        raise ValueError(f"{sample['id']}: cannot re-pad a sample that is already padded")
    idx, real = pad_index(n, depth, padding)
    fill = np.asarray(air, np.float32)[:, None, None, None]  # (C, 1, 1, 1)
    out = {**sample, "image": take_padded(sample["image"], idx, 1, fill), "slice_mask": real}  # (C, depth, H, W)
    if "masks" in sample:
        out["masks"] = take_padded(sample["masks"], idx, 1, False)  # (M, depth, H, W)
    return out


def take_padded(array: np.ndarray, idx: np.ndarray, axis: int, fill) -> np.ndarray:
    """``array`` indexed by ``idx`` along ``axis``; entries -1 become ``fill``."""
    out = np.take(array, np.maximum(idx, 0), axis=axis)
    if (idx < 0).any():
        where = [slice(None)] * out.ndim
        where[axis] = idx < 0
        out[tuple(where)] = fill
    return out


def chunk_start(num_slices: int, depth: int, rng: np.random.Generator) -> int:
    """Seeded uniform z-start of a ``depth``-slice chunk; 0 when the volume is not deeper."""
    return int(rng.integers(0, num_slices - depth + 1)) if num_slices > depth else 0


def organs_in(z_extents: dict[str, tuple[int, int]], organ_sentences: dict[str, list[str]],
              z0: int, z1: int) -> list[str]:
    """Organs with sentences whose extent ``[e0, e1)`` overlaps ``[z0, z1)``, in report order."""
    return [o for o, sents in organ_sentences.items()
            if sents and o in z_extents and z_extents[o][0] < z1 and z_extents[o][1] > z0]


def prior_extents(num_slices: int) -> dict[str, tuple[int, int]]:
    """:data:`ORGAN_Z_PRIOR` in slices of a ``num_slices``-slice volume: organ -> ``[floor(f0 Z), ceil(f1 Z))``."""
    eps = 1e-9  # 0.55 * 100 is 55.000000000000007 in floating point, still slice 55
    return {organ: (int(np.floor(f0 * num_slices + eps)), int(np.ceil(f1 * num_slices - eps)))
            for organ, (f0, f1) in ORGAN_Z_PRIOR.items()}


def organ_z_extents(volume: VolumeSource, organ_z_prior: bool) -> dict[str, tuple[int, int]]:
    """The volume's mask z-extents; a volume none of whose masks is an organ's (plain CT-RATE: the body
    mask only) gets the prior's extents instead (with ``organ_z_prior``). Masks, where a volume has
    organ masks at all, are the only source: an organ without one is not placed, as before, so a
    masked cohort (the synthetic one, RadGenome-ChestCT) trains exactly as without the prior."""
    if not organ_z_prior or not getattr(volume, "organ_z_prior", True):
        return dict(volume.z_extents)
    if any(canonical_organ(n) is not None for n in volume.mask_names):
        return dict(volume.z_extents)
    return {**prior_extents(int(volume.shape[0])), **volume.z_extents}


def structured_report(findings: str, impressions: str) -> str:
    """COLIPRI's text: the findings as organ sections (``reports.structure_report``), then the impressions."""
    lines = structure_report(findings).splitlines()
    if impressions.strip():
        lines.append(f"Impression: {impressions.strip()}")
    return "\n".join(lines)


def report_text(findings: str, impressions: str, text_mode: str) -> str:
    """A volume's whole-report text as a model with ``text_mode`` trained on it (evaluation's reports):
    the structured report for ``structured``, else findings + impressions."""
    findings, impressions = str(findings or ""), str(impressions or "")
    return structured_report(findings, impressions) if text_mode == "structured" else f"{findings} {impressions}".strip()


def choose_text(record: VolumeRecord, text_mode: str, z0: int, z1: int, organ_z_prior: bool = False) -> dict:
    """text, sentences, organs and ``text_source`` ('organs', 'impressions' or 'report'); organs placed by
    the volume's masks, or by :data:`ORGAN_Z_PRIOR` on a volume without organ masks (``organ_z_prior``)."""
    organs = organs_in(organ_z_extents(record.volume, organ_z_prior), record.organ_sentences, z0, z1)
    if text_mode == "structured":
        lines = structured_report(record.findings, record.impressions).splitlines()
        return {"text": "\n".join(lines), "sentences": lines, "organs": organs, "text_source": "structured"}
    if text_mode == "organs" and organs:
        sentences = [s for o in organs for s in record.organ_sentences[o]]
        source = "organs"
    elif text_mode == "organs" and record.impressions.strip():
        sentences, source = split_sentences(record.impressions), "impressions"
    else:
        report = " ".join(t.strip() for t in (record.findings, record.impressions) if t.strip())
        sentences, source = split_sentences(report) if report else [], "report"
    return {"text": " ".join(sentences), "sentences": sentences, "organs": organs, "text_source": source}


def fit_axis(n: int, target: int, rng: np.random.Generator | None) -> tuple[int, int, int, int]:
    """(src0, src1, dst0, dst1) to crop (centred or seeded random) or centre-pad ``n`` to ``target``."""
    if n >= target:
        start = int(rng.integers(0, n - target + 1)) if rng is not None else (n - target) // 2
        return start, start + target, 0, target
    before = (target - n) // 2
    return 0, n, before, before + n


def fit_inplane(array: np.ndarray, size: tuple[int, int] | None, fill,
                offsets: tuple[tuple[int, int, int, int], ...] | None = None) -> np.ndarray:
    """Crop/pad the last two axes of (..., Y, X) to ``size`` using ``offsets`` from :func:`fit_axis`."""
    if size is None:
        return array
    (y0, y1, v0, v1), (x0, x1, u0, u1) = offsets
    out = np.full((*array.shape[:-2], *size), fill, dtype=array.dtype)  # (..., H, W)
    out[..., v0:v1, u0:u1] = array[..., y0:y1, x0:x1]
    return out


def _depth_range(config: SamplerConfig, num_slices: int, rng: np.random.Generator) -> tuple[int, int, int]:
    """(z0, z1, output depth) of the slices to read; the depth at least ``min_depth``."""
    least = config.min_depth or 1
    if config.mode == "chunk":
        z0 = chunk_start(num_slices, config.chunk_depth, rng)
        return z0, min(z0 + config.chunk_depth, num_slices), max(config.chunk_depth, least)
    keep = min(num_slices, config.max_slices or num_slices)
    z0 = (num_slices - keep) // 2
    return z0, z0 + keep, max(keep, least)


def _masks(volume: VolumeSource, config: SamplerConfig, z0: int, z1: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Mask names, (M, z1 - z0, Y, X) bool, and (M,) availability."""
    names = list(config.mask_names) if config.mask_names is not None else list(volume.mask_names)
    have = [n for n in names if n in volume.mask_names]
    got = volume.mask_slab(z0, z1, have) if have else None
    out = np.zeros((len(names), z1 - z0, *volume.shape[1:]), bool)  # (M, D, Y, X)
    for k, name in enumerate(names):
        if name in have:
            out[k] = got[have.index(name)]
    return names, out, np.array([n in have for n in names], bool)


BODY = "body"
"""Name of the body mask in a cache (``preprocess`` stores it for every volume)."""


def body_slab(volume: VolumeSource, z0: int, z1: int, hu: np.ndarray | None = None) -> np.ndarray:
    """(z1 - z0, Y, X) bool body mask: the cached ``body`` mask, else :func:`~ctvlp.data.preprocess.body_mask`
    of the HU slab ``hu`` (read when not given; holes filled per axial slice as in ``preprocess``)."""
    if BODY in volume.mask_names:
        return volume.mask_slab(z0, z1, [BODY])[0]
    hu = volume.slab(z0, z1) if hu is None else hu
    return body_mask(hu.transpose(2, 1, 0), PreprocessConfig.body_threshold).transpose(2, 1, 0)  # axial = last


def draw_sample(record: VolumeRecord, config: SamplerConfig, rng: np.random.Generator,
                hu_window: tuple[float, float] = (-1000.0, 1000.0), depth: int = 0) -> dict:
    """One sample dict (numpy arrays), padded once (:func:`pad_depth`) to its own depth or to ``depth``
    (a batch's deepest member) when that is larger; see docs/architecture.md for the keys."""
    volume = record.volume
    z_count, y_count, x_count = volume.shape
    z0, z1, own_depth = _depth_range(config, z_count, rng)
    crop_rng = rng if config.random_crop else None
    offsets = None if config.size is None else (fit_axis(y_count, config.size[0], crop_rng),
                                                fit_axis(x_count, config.size[1], crop_rng))
    slab = volume.slab(z0, z1)  # (n, Y, X), n = z1 - z0 real slices
    hu = fit_inplane(slab, config.size, AIR_HU, offsets)  # (n, H, W)
    channels = [window(hu, lo, hi) for lo, hi in config.hu_windows(hu_window)]
    if config.body_channel:
        body = fit_inplane(body_slab(volume, z0, z1, slab), config.size, False, offsets)
        channels.append(np.where(body, np.float32(1.0), np.float32(-1.0)))  # (n, H, W)
    sample = {"id": volume.vid, "image": np.stack(channels), "slice_mask": np.ones(z1 - z0, bool),  # (C, n, H, W)
              "z0": z0, "z1": z1, "spacing": np.asarray(volume.spacing_zyx, np.float32),
              "labels": np.asarray(record.labels, np.float32), "label_mask": np.asarray(record.label_mask, bool),
              **choose_text(record, config.text, z0, z1, config.organ_z_prior),
              "findings": str(record.findings or "")}  # plain findings, whatever ``text``: COLIPRI's OSL pairs
    if config.include_masks:
        names, masks, available = _masks(volume, config, z0, z1)
        masks = fit_inplane(masks, config.size, False, offsets)  # (M, n, H, W)
        sample.update(masks=masks, mask_names=names, mask_available=available)
    return pad_depth(sample, max(own_depth, depth), config.padding, air_values(config, hu_window))


def window_sample(volume, sampler: SamplerConfig, z0: int, z1: int, hu_window: tuple[float, float]) -> dict:
    """The sample of slices ``[z0, z1)`` of ``volume`` drawn as in training (evaluation's fixed windows:
    segmentation, organ chunks, inference): a chunk of the window's slices, padded to ``chunk_depth``
    in ``chunk`` mode; the window itself in ``whole`` mode."""
    depth = max(z1 - z0, sampler.chunk_depth) if sampler.mode == "chunk" else z1 - z0
    config = dataclasses.replace(sampler, mode="chunk", chunk_depth=depth)
    return draw_sample(VolumeRecord(volume=ZWindow(volume, z0, z1)), config, np.random.default_rng(0), hu_window)


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
