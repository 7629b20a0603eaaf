"""NRRD and MetaImage (.nrrd, .nhdr, .mha, .mhd) through SimpleITK, with direction cosines."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ctvlp.errors import BadVolumeError
from ctvlp.io._convert import LPS_TO_RAS, require_real, to_hu
from ctvlp.io.header import check_voxels
from ctvlp.io.volume import Volume


def itk_affine(origin, spacing, direction) -> np.ndarray:
    """ITK geometry (LPS world) -> 4x4 index (i, j, k) -> RAS mm."""
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(direction, dtype=np.float64).reshape(3, 3) * np.asarray(spacing)[None, :]
    lps[:3, 3] = origin
    return LPS_TO_RAS @ lps


def read_itk(path: Path, limit: int) -> Volume:
    """Read a 3-D NRRD / MHA / MHD file. ITK's array is (z, y, x); ours follows ITK's index (i, j, k). A
    header declaring more than ``limit`` voxels is refused before the voxels are read."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
        check_voxels(path, reader.GetSize(), limit)
        image = reader.Execute()
    except BadVolumeError:
        raise
    except Exception as err:  # SimpleITK raises RuntimeError with ITK's message
        msg = str(err).strip().splitlines()
        raise BadVolumeError(path, f"cannot read image ({msg[-1] if msg else type(err).__name__})") from None
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise BadVolumeError(path, f"expected a 3-D scalar image, got {image.GetDimension()}-D with "
                                   f"{image.GetNumberOfComponentsPerPixel()} component(s)")
    stored = sitk.GetArrayFromImage(image).transpose(2, 1, 0)  # (z, y, x) -> (i, j, k)
    require_real(path, stored)
    affine = itk_affine(image.GetOrigin(), image.GetSpacing(), image.GetDirection())
    meta = {"reader": "itk", "stored_dtype": str(stored.dtype)}
    return Volume(to_hu(stored), affine, path=str(path), meta=meta)
