"""`load_volume`: any supported CT file or DICOM folder -> a validated :class:`Volume` in HU."""

from __future__ import annotations

from os import PathLike
from pathlib import Path

import numpy as np

from ctvlp.errors import BadVolumeError
from ctvlp.io._convert import error_text
from ctvlp.io.dicom import read_dicom_series
from ctvlp.io.header import check_dicom_header, max_voxels as voxel_limit
from ctvlp.io.itk import read_itk
from ctvlp.io.nifti import read_nifti
from ctvlp.io.volume import Volume

NIFTI_SUFFIXES = (".nii", ".nii.gz")
ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
CT_AIR_HU = -500.0
"""A CT volume holds air (-1000 HU) or outside-field padding (-1024, -2048, -3024): its low percentile
lies below this. MR, PET and raw unrescaled CT values (air near 0) do not."""
CT_LOW_PERCENTILE = 0.5
SAMPLE_VOXELS = 2_000_000
DICOM_PREAMBLE = 128


def volume_format(path: Path) -> str:
    """'nifti', 'itk', 'dicom' (a folder or a single DICOM file), or raise."""
    name = path.name.lower()
    if path.is_dir():
        return "dicom"
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(ITK_SUFFIXES):
        return "itk"
    if name.endswith(DICOM_SUFFIXES) or _has_dicom_preamble(path):
        return "dicom"
    raise BadVolumeError(path, "unknown volume format (expected .nii, .nii.gz, .nrrd, .nhdr, .mha, .mhd, "
                               "a DICOM file or a DICOM series folder)")


def _has_dicom_preamble(path: Path) -> bool:
    """True for a DICOM Part 10 file: 'DICM' after the 128-byte preamble (slices often have no suffix)."""
    try:
        with path.open("rb") as f:
            return f.read(DICOM_PREAMBLE + 4)[DICOM_PREAMBLE:] == b"DICM"
    except OSError as err:
        raise BadVolumeError(path, f"cannot read the file ({error_text(err)})") from None


def load_volume(path: str | PathLike, *, require_ct: bool = True, series_uid: str | None = None,
                max_voxels: int | None = None) -> Volume:
    """Read NIfTI, NRRD/MHA/MHD, a DICOM series folder (or one file of a series) into HU.

    Args:
        path: the file or folder.
        require_ct: check that the intensities look like CT in HU and that a DICOM's Modality is CT
            (see :func:`check_ct`); pass False for masks and label maps.
        series_uid: which series to read from a DICOM folder holding several.
        max_voxels: refuse a header declaring more voxels, before reading them (default:
            ``$CTVLP_MAX_VOXELS`` or 600 M; :mod:`ctvlp.io.header`).
    Raises:
        BadVolumeError: missing, unreadable, truncated or empty file; a header over the voxel limit;
            not 3-D; a zero-size axis; NaN/inf values; non-CT intensities or Modality (when ``require_ct``).
    """
    path = Path(path)
    if not path.exists():
        raise BadVolumeError(path, "no such file or folder")
    if path.is_file() and path.stat().st_size == 0:
        raise BadVolumeError(path, "empty file (0 bytes)")
    kind = volume_format(path)
    limit = voxel_limit(max_voxels)
    if kind == "nifti":
        volume = read_nifti(path, limit)
    elif kind == "itk":
        volume = read_itk(path, limit)
    else:
        check_dicom_header(path, limit)
        volume = read_dicom_series(path, series_uid)
    volume.meta["format"] = kind
    check_array(volume)
    if require_ct:
        check_ct(volume)
    return volume


def check_array(volume: Volume) -> None:
    """No zero-size axis, no NaN/inf, an invertible affine."""
    if 0 in volume.shape:
        raise BadVolumeError(volume.path, f"zero-size axis in shape {volume.shape}")
    if np.issubdtype(volume.array.dtype, np.floating) and not np.all(np.isfinite(volume.array)):
        bad = int(np.size(volume.array) - np.count_nonzero(np.isfinite(volume.array)))
        raise BadVolumeError(volume.path, f"{bad} voxel(s) are NaN or infinite")
    if not np.all(np.isfinite(volume.affine)) or abs(np.linalg.det(volume.affine[:3, :3])) < 1e-9:
        raise BadVolumeError(volume.path, "the affine is singular or not finite (no usable geometry)")


def strided_sample(array: np.ndarray) -> np.ndarray:
    """A strided sub-grid of about SAMPLE_VOXELS voxels; the whole array up to ~3.4x that size."""
    step = max(1, round((array.size / SAMPLE_VOXELS) ** (1 / 3)))
    return array[::step, ::step, ::step]


def low_percentile(array: np.ndarray, q: float = CT_LOW_PERCENTILE) -> float:
    """q-th percentile of :func:`strided_sample` (fast on big volumes)."""
    return float(np.percentile(strided_sample(array), q))


def check_ct(volume: Volume) -> None:
    """Refuse what is not CT in HU: a DICOM whose Modality is not CT (an MR or PET series, whatever its
    values), and intensities whose 0.5th percentile is not below -500 HU (air)."""
    modality = volume.meta.get("modality")
    if modality and modality != "CT":
        raise BadVolumeError(volume.path, f"DICOM Modality is {modality!r}, not 'CT' (an MR, PET or other "
                                          "non-CT series); ctvlp reads CT volumes")
    low = low_percentile(volume.array)
    if low > CT_AIR_HU:
        high = float(volume.array.max())
        raise BadVolumeError(volume.path, f"intensities do not look like CT in HU (0.5th percentile "
                                          f"{low:.0f}, max {high:.0f}; a CT holds air near -1000 HU): "
                                          "an MR/PET scan, or raw values that need a rescale?")
