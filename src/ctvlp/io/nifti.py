"""NIfTI (.nii, .nii.gz) through nibabel: its affine (sform/qform precedence) and its scaling."""

from __future__ import annotations

import contextlib
from pathlib import Path

import nibabel as nib
import numpy as np

from ctvlp.errors import BadVolumeError
from ctvlp.io._convert import error_text, require_real, to_hu
from ctvlp.io.header import check_voxels
from ctvlp.io.volume import Volume


@contextlib.contextmanager
def quiet_header_fixes():
    """Silence nibabel's notes on the headers it fixes while loading ("setting 0 dims to 1"): they would be
    lines on stderr besides ours, and :func:`read_nifti` refuses what matters itself."""
    logger = nib.imageglobals.logger
    before, logger.disabled = logger.disabled, True
    try:
        yield
    finally:
        logger.disabled = before


def read_nifti(path: Path, limit: int) -> Volume:
    """Read a 3-D NIfTI and apply scl_slope/scl_inter; a header declaring more than ``limit`` voxels is
    refused before the voxels are read (nibabel's load reads the header only).

    Trailing singleton axes beyond the third, as in a (I, J, K, 1) file holding one volume of a
    series, are dropped; a 4-D file with several volumes is refused. A voxel size (pixdim) of 0 where
    the affine comes from it (no sform) is refused: nibabel would silently make it 1 mm. A negative
    pixdim is read as its absolute value, as nibabel and the NIfTI standard do (qfac carries the flip).
    """
    try:
        with quiet_header_fixes():
            img = nib.load(str(path))
            check_voxels(path, img.shape, limit)
            _check_pixdim(path, img)
            stored = np.asarray(img.dataobj.get_unscaled()).reshape(img.shape)  # zero-size data comes back 1-D
    except BadVolumeError:
        raise
    except Exception as err:  # nibabel, gzip and zlib raise many types for broken files
        raise BadVolumeError(path, f"cannot read NIfTI ({error_text(err)})") from None
    while stored.ndim > 3 and stored.shape[-1] == 1:
        stored = stored[..., 0]
    if stored.ndim != 3:
        raise BadVolumeError(path, f"expected a 3-D volume, got shape {img.shape}"
                                   + (" (a series of volumes: extract one)" if stored.ndim > 3 else ""))
    require_real(path, stored)
    slope, inter = img.dataobj.slope, img.dataobj.inter
    slope = 1.0 if slope is None or not np.isfinite(slope) or slope == 0 else float(slope)
    inter = 0.0 if inter is None or not np.isfinite(inter) else float(inter)
    meta = {"reader": "nifti", "stored_dtype": str(stored.dtype), "scl_slope": slope, "scl_inter": inter}
    return Volume(to_hu(stored, slope, inter), img.affine, path=str(path), meta=meta)


def _check_pixdim(path: Path, img) -> None:
    """Refuse a zero spatial pixdim when the affine is built from the pixdims (no sform): the header as
    stored, before nibabel's fix."""
    if img.header["sform_code"] != 0:
        return
    with nib.openers.ImageOpener(str(path)) as f:
        raw = type(img.header).from_fileobj(f, check=False)
    zooms = [round(float(z), 6) for z in raw["pixdim"][1:1 + min(3, len(img.shape))]]
    if any(z == 0 for z in zooms):
        raise BadVolumeError(path, f"voxel size (pixdim) {zooms} has a 0 and there is no sform: the header gives "
                                   "no usable spacing")
