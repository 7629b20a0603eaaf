"""Shared helpers of the readers: exact HU arrays in the smallest faithful dtype."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ctvlp.errors import BadVolumeError

INT16 = np.iinfo(np.int16)
EXACT_INT_LIMIT = 2**31  # integer slope/intercept below this keep integer data out of floating point


def require_real(path: Path, stored: np.ndarray) -> None:
    """Refuse voxel types that are not one real number (RGB records, complex values)."""
    if stored.dtype.kind not in "biuf":
        raise BadVolumeError(path, f"voxels of type {stored.dtype} are not one real number each "
                                   "(RGB or complex data is not a CT in HU)")


def error_text(err: BaseException) -> str:
    """'Type: message' on one line (library messages may span several)."""
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def to_hu(stored: np.ndarray, slope: float = 1.0, intercept: float = 0.0) -> np.ndarray:
    """slope * stored + intercept, as int16 when every value is an exact integer in range, else float32.

    Integer data with integer slope/intercept never passes through floating point.
    """
    slope, intercept = float(slope), float(intercept)
    integral_pair = all(v.is_integer() and abs(v) < EXACT_INT_LIMIT for v in (slope, intercept))
    if np.issubdtype(stored.dtype, np.integer) and integral_pair:
        if slope == 1 and intercept == 0 and (stored.dtype == np.int16 or stored.dtype.itemsize == 1):
            return stored.astype(np.int16, copy=False)  # (u)int8 masks and label maps always fit
        hu = stored.astype(np.int32) * int(slope) + int(intercept) if stored.dtype.itemsize < 4 else \
            stored.astype(np.int64) * int(slope) + int(intercept)
        if hu.size == 0 or (hu.min() >= INT16.min and hu.max() <= INT16.max):
            return hu.astype(np.int16)
        return hu.astype(np.float32)
    hu = stored.astype(np.float32)
    if slope != 1 or intercept != 0:
        with np.errstate(over="ignore"):  # overflow gives inf, which check_array reports with the file
            hu = hu * np.float32(slope) + np.float32(intercept)
    return _narrow(hu)


def _narrow(hu: np.ndarray) -> np.ndarray:
    """float array -> int16 when it holds only exact in-range integers."""
    if hu.size == 0 or not np.all(np.isfinite(hu)):
        return hu
    if hu.min() >= INT16.min and hu.max() <= INT16.max and np.array_equal(hu, np.round(hu)):
        return hu.astype(np.int16)
    return hu


LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
