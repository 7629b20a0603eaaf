"""The voxel budget: a volume's size read from its header and refused before any voxel is read.

A NIfTI can declare 30000 x 30000 x 30000 voxels in a 352-byte header, a DICOM slice 65535 x 65535
pixels; reading either would try to allocate terabytes. Each reader checks the header it reads before
the voxels (:func:`check_voxels`: NIfTI and NRRD/MHA from their own header, a DICOM folder from its first
image slice times its files and frames, :func:`check_dicom_header`) and refuses more than the limit. Preprocessing holds about :data:`BYTES_PER_VOXEL` bytes per input voxel at its peak
(int16 input, float32 reoriented copy, Gaussian prefilter, trilinear output); the limit is
:data:`DEFAULT_MAX_VOXELS` (about 512 x 512 x 2300, ~8 GB at the peak), raised with the environment
variable ``CTVLP_MAX_VOXELS`` or a ``max_voxels`` argument (the inference commands' ``--max-voxels``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ctvlp.errors import BadVolumeError

DEFAULT_MAX_VOXELS = 600_000_000
MAX_VOXELS_ENV = "CTVLP_MAX_VOXELS"
BYTES_PER_VOXEL = 14


def max_voxels(limit: int | None = None) -> int:
    """``limit``, else ``$CTVLP_MAX_VOXELS``, else :data:`DEFAULT_MAX_VOXELS`."""
    if limit is not None:
        return int(limit)
    raw = os.environ.get(MAX_VOXELS_ENV, "").replace("_", "").strip()
    if not raw:
        return DEFAULT_MAX_VOXELS
    try:
        return int(float(raw))
    except ValueError:
        raise BadVolumeError(None, f"{MAX_VOXELS_ENV}={raw!r} is not a number of voxels") from None


def dicom_shape(path: Path) -> tuple[int, ...] | None:
    """(columns, rows, files x frames) of a DICOM folder's (or file's) first image slice, from its header;
    None when no header says (the reader then gives its own error)."""
    import pydicom

    folder = path if path.is_dir() else path.parent
    files = sorted(p for p in folder.iterdir() if p.is_file()) if path.is_dir() else [path]
    for f in files:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
        except Exception:
            continue
        if "Rows" in ds and "Columns" in ds:
            return int(ds.Columns), int(ds.Rows), len(files) * int(ds.get("NumberOfFrames") or 1)
    return None


def check_voxels(path: str | Path | None, shape: Sequence[int], limit: int) -> None:
    """Refuse a grid of more than ``limit`` voxels (see the module docstring)."""
    spatial = tuple(int(s) for s in shape[:3])
    voxels = int(np.prod(spatial, dtype=np.int64))
    if voxels > limit:
        raise BadVolumeError(path, f"{' x '.join(map(str, spatial))} = {voxels / 1e6:.0f} M voxels is over the "
                                   f"limit of {limit / 1e6:.0f} M voxels (preprocessing needs about "
                                   f"{voxels * BYTES_PER_VOXEL / 1e9:.1f} GB); if this machine has the memory, raise it "
                                   f"with {MAX_VOXELS_ENV}=N (the inference commands also take --max-voxels N)")


def check_dicom_header(path: Path, limit: int) -> None:
    """Refuse a DICOM folder (or file) whose first image slice's header, times its files and frames,
    declares more than ``limit`` voxels (the NIfTI and ITK readers check the header they read themselves)."""
    try:
        shape = dicom_shape(path)
    except OSError:  # an unlistable folder: the reader names the problem
        shape = None
    if shape is not None:
        check_voxels(path, shape, limit)
