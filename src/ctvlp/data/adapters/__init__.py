"""Dataset adapters: each turns one dataset's own layout into a :class:`~ctvlp.data.manifest.Manifest`.

:func:`load_row` is the single way the rest of ctvlp reads the volume of a manifest row: it applies
what the dataset's metadata knows and the file does not (e.g. CT-RATE's rescale pair).
"""

from __future__ import annotations

import math

from ctvlp.data.adapters.fixes import apply_spacing_hint, to_hu
from ctvlp.io.load import check_ct, load_volume
from ctvlp.io.volume import Volume


def _number(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def load_row(row: dict) -> Volume:
    """Read the volume of one manifest row in HU, with dataset-specific fixes applied.

    CT-RATE rows: the metadata's spacing replaces a header spacing that is clearly unset, and the
    metadata's rescale pair is applied only when the data show raw stored values (see
    :mod:`ctvlp.data.adapters.fixes`); load_volume's CT check runs after these fixes, not before.
    """
    if row.get("source") != "ct-rate":
        return load_volume(row["path"])
    volume = load_volume(row["path"], require_ct=False)
    volume = apply_spacing_hint(volume, row.get("spacing_hint") or None)
    volume = to_hu(volume, _number(row.get("rescale_slope")), _number(row.get("rescale_intercept")))
    check_ct(volume)
    return volume
