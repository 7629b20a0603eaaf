"""Fixes applied when a manifest row's volume is read: what the dataset's metadata knows and the file
does not.

* **Spacing**: a header whose spacing is clearly unset (all 1.0 with an axis-aligned, identity-like
  affine) is given the metadata's ``spacing_hint``, keeping the orientation and origin.
* **HU detection**: CT-RATE's metadata carries a rescale pair (e.g. slope 1, intercept -1024), but its
  corrected volumes are already in HU; applying the pair again is CT-CLIP's known bug (its issue #50).
  The data decides. Air is the most common very low value of a chest CT: in HU it sits near -1000, in
  raw stored values near 0 (HU + 1024). With ``air`` and ``top`` = the 1st and 99th percentiles of the
  stored values (a constant padding value that fills >1 % of the volume at its minimum excluded):

  1. ``air <= -500``: already HU, values kept (decision ``hu``);
  2. the pair is known, ``-1400 <= slope * air + intercept <= -500`` and
     ``slope * top + intercept > -500`` (a body besides the air): raw stored values, the pair is
     applied (decision ``rescaled``);
  3. anything else (no air in either reading, or no pair): values kept (decision ``ambiguous``), and
     the CT check that follows decides.

  The ambiguous case is a volume without air (a uniform block, a crop inside the body): the two
  readings differ by a shift, and without air nothing in the values tells them apart. A crop inside
  the body that holds bone can still be misread as raw; CT-RATE's full field-of-view chest volumes
  always hold air, so the first two rules decide them.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass

import numpy as np

from ctvlp.io.volume import Volume

log = logging.getLogger(__name__)

AIR_MAX_HU = -500.0
"""Air (-1000 HU) and lung lie well below this; fat, water and soft tissue well above."""
AIR_MIN_HU = -1400.0
"""Nothing physical lies below air: a rescaled 'air' lower than this means the pair does not fit."""
AIR_PERCENTILE = 1.0
"""Low percentile taken as the air level."""
PADDING_SHARE = 0.01
"""A minimum value filling more than this share of the volume is treated as padding."""
SAMPLE_VOXELS = 2_000_000
"""About this many voxels (a strided sub-grid) are enough to find the air level."""


@dataclass(frozen=True)
class HuDecision:
    """How the stored values of one volume were turned into HU."""

    kind: str
    """``hu`` (already HU), ``rescaled`` (slope * x + intercept applied) or ``ambiguous`` (kept)."""
    air: float
    """Low percentile of the stored values, padding excluded."""
    reason: str
    """One sentence for the volume's meta and the logs."""


def air_level(array: np.ndarray) -> tuple[float, float]:
    """(1st, 99th) percentiles of a strided sub-grid of ``array``, padding at the minimum excluded."""
    step = max(1, round((array.size / SAMPLE_VOXELS) ** (1 / 3)))
    sample = np.asarray(array[::step, ::step, ::step], dtype=np.float32).ravel()  # (n,)
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return math.nan, math.nan
    at_lowest = sample == sample.min()
    if PADDING_SHARE < at_lowest.mean() < 1.0:
        sample = sample[~at_lowest]
    low, high = np.percentile(sample, [AIR_PERCENTILE, 100 - AIR_PERCENTILE])
    return float(low), float(high)


def decide_hu(array: np.ndarray, slope: float, intercept: float) -> HuDecision:
    """Apply the rules of the module docstring to the stored values and the metadata pair."""
    air, top = air_level(array)
    if air <= AIR_MAX_HU:
        return HuDecision("hu", air, f"air at {air:.0f} already looks like HU; metadata pair not applied")
    pair_known = math.isfinite(slope) and math.isfinite(intercept)
    rescaled_air = slope * air + intercept if pair_known else math.nan
    if pair_known and AIR_MIN_HU <= rescaled_air <= AIR_MAX_HU and slope * top + intercept > AIR_MAX_HU:
        return HuDecision("rescaled", air, f"air at {air:.0f} stored, {rescaled_air:.0f} HU after "
                                           f"slope {slope:g} and intercept {intercept:g}")
    return HuDecision("ambiguous", air, f"no air with a body in the stored values (percentiles {air:.0f}, "
                                        f"{top:.0f}) nor after the metadata pair {slope:g}, {intercept:g}; "
                                        f"values kept")


def to_hu(volume: Volume, slope: float, intercept: float) -> Volume:
    """The volume in HU per :func:`decide_hu`; the decision is recorded in ``volume.meta``."""
    decision = decide_hu(volume.array, slope, intercept)
    array = volume.array
    if decision.kind == "rescaled":
        array = array.astype(np.float32) * np.float32(slope) + np.float32(intercept)  # (I, J, K)
        if np.array_equal(array, np.round(array)) and array.min() >= -32768 and array.max() <= 32767:
            array = array.astype(np.int16)
    elif decision.kind == "ambiguous":
        log.warning("%s: %s", volume.path, decision.reason)
    meta = {**volume.meta, "hu_decision": decision.kind, "hu_reason": decision.reason,
            "air_level_stored": decision.air, "metadata_rescale": [slope, intercept]}
    return Volume(array, volume.affine, volume.path, meta)


def header_spacing_unset(affine: np.ndarray) -> bool:
    """True when the 3x3 part is a signed permutation matrix: unit spacing, axis-aligned."""
    block = np.asarray(affine, dtype=np.float64)[:3, :3]
    rounded = np.round(block)
    return bool(np.allclose(block, rounded, atol=1e-4)
                and np.array_equal(np.abs(rounded).sum(axis=0), np.ones(3))
                and np.array_equal(np.abs(rounded).sum(axis=1), np.ones(3)))


def apply_spacing_hint(volume: Volume, hint: str | None) -> Volume:
    """Rescale the affine's columns to the hinted spacing when the header's is clearly unset."""
    meta = {**volume.meta, "spacing_source": "header"}
    if hint:
        spacing = np.asarray(json.loads(hint), dtype=np.float64)  # (3,) mm along array axes
        if header_spacing_unset(volume.affine) and not np.allclose(spacing, 1.0):
            affine = volume.affine.copy()
            affine[:3, :3] = affine[:3, :3] * spacing[None, :]  # column a scaled by spacing[a]
            return Volume(volume.array, affine, volume.path, {**meta, "spacing_source": "metadata"})
    return Volume(volume.array, volume.affine, volume.path, meta)

