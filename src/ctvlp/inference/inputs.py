"""What inference accepts as a CT volume: checked from the header before any voxel is read.

:func:`read_ct` takes a path (anything :func:`ctvlp.load_volume` reads) or a :class:`~ctvlp.Volume`
and refuses, with the file and the reason:

* a volume whose voxel count exceeds the limit, from the header alone (NIfTI and NRRD/MHA headers, a
  DICOM folder's first slice times its file count), before the voxels are read. Preprocessing holds
  about :data:`BYTES_PER_VOXEL` bytes per input voxel at its peak (int16 input, float32 reoriented
  copy, Gaussian prefilter, trilinear output); the limit is :data:`DEFAULT_MAX_VOXELS` (about
  512 x 512 x 2300, ~8 GB at the peak), raised with the environment variable ``CTVLP_MAX_VOXELS`` or
  the ``max_voxels`` argument (CLI ``--max-voxels``);
* a scan with fewer than :data:`MIN_SLICES` slices along an axis (a single slice or a localiser): the
  model is a 3-D encoder;
* intensities that are not CT in HU (an MR scan): :func:`ctvlp.io.load.check_ct`, as ``load_volume`` does.

:class:`PreparedSource` shows a preprocessed volume to the sampler as a cached volume looks
(``ctvlp.data.sampling.VolumeSource``), so inference draws its input with the evaluation's own code.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ctvlp.data.preprocess import PreprocessedVolume
from ctvlp.errors import BadVolumeError
from ctvlp.io.volume import Volume

DEFAULT_MAX_VOXELS = 600_000_000
MAX_VOXELS_ENV = "CTVLP_MAX_VOXELS"
BYTES_PER_VOXEL = 14
MIN_SLICES = 2


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


def header_shape(path: Path) -> tuple[int, ...] | None:
    """The voxel grid's shape from the header only; None when the header cannot say (the reader then
    gives its own error). A DICOM folder: (rows, columns, files) of its first readable slice."""
    from ctvlp.io.load import volume_format

    kind = volume_format(path)
    try:
        if kind == "nifti":
            import nibabel as nib

            return tuple(int(s) for s in nib.load(str(path)).shape)
        if kind == "itk":
            import SimpleITK as sitk

            reader = sitk.ImageFileReader()
            reader.SetFileName(str(path))
            reader.ReadImageInformation()
            return tuple(int(s) for s in reader.GetSize())
        return _dicom_shape(path)
    except Exception:  # unreadable header: load_volume names the problem
        return None


def _dicom_shape(path: Path) -> tuple[int, ...] | None:
    import pydicom

    folder = path if path.is_dir() else path.parent
    files = sorted(p for p in folder.iterdir() if p.is_file())
    for f in files:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
        except Exception:
            continue
        if "Rows" in ds and "ImagePositionPatient" in ds:
            return int(ds.Columns), int(ds.Rows), len(files) if path.is_dir() else 1
    return None


def check_shape(path: str | Path | None, shape: Sequence[int], limit: int) -> None:
    """Refuse too many voxels or a single slice (see the module docstring)."""
    spatial = tuple(int(s) for s in shape[:3])
    voxels = int(np.prod(spatial, dtype=np.int64))
    if voxels > limit:
        raise BadVolumeError(path, f"{' x '.join(map(str, spatial))} = {voxels / 1e6:.0f} M voxels is over the "
                                   f"limit of {limit / 1e6:.0f} M voxels (preprocessing needs about "
                                   f"{voxels * BYTES_PER_VOXEL / 1e9:.1f} GB); raise it with {MAX_VOXELS_ENV} "
                                   f"or --max-voxels if this machine has the memory")
    if len(spatial) == 3 and min(spatial) < MIN_SLICES:
        raise BadVolumeError(path, f"shape {spatial} has {min(spatial)} slice along an axis: the model encodes "
                                   f"3-D volumes, give the whole series (at least {MIN_SLICES} slices)")


def read_ct(source: str | os.PathLike | Volume, limit: int | None = None) -> Volume:
    """A checked CT :class:`Volume` from a path or a Volume (see the module docstring)."""
    from ctvlp.io.load import check_ct, load_volume

    limit = max_voxels(limit)
    if isinstance(source, Volume):
        check_shape(source.path, source.shape, limit)
        check_ct(source)
        return source
    path = Path(source)
    if path.exists():
        shape = header_shape(path)
        if shape is not None:
            check_shape(path, shape, limit)
    volume = load_volume(path)
    check_shape(path, volume.shape, limit)
    return volume


class PreparedSource:
    """A :class:`~ctvlp.data.preprocess.PreprocessedVolume` seen as a cached volume by the sampler
    (same spacing rounding as the cache's meta.json; masks: the body)."""

    def __init__(self, prepared: PreprocessedVolume, vid: str = "input"):
        self.prepared = prepared
        self.vid = vid
        self.shape: tuple[int, int, int] = tuple(int(s) for s in prepared.image.shape)  # type: ignore[assignment]
        self.spacing_zyx = np.linalg.norm(prepared.affine_zyx[:3, :3], axis=0).round(6)
        self.mask_names: list[str] = list(prepared.masks)
        self.z_extents: dict[str, tuple[int, int]] = {}

    def slab(self, z0: int, z1: int) -> np.ndarray:
        return np.array(self.prepared.image[z0:z1])

    def mask_slab(self, z0: int, z1: int, names: Sequence[str] | None = None) -> np.ndarray:
        names = self.mask_names if names is None else list(names)
        return np.stack([self.prepared.masks[n][z0:z1] for n in names])  # (M, z1 - z0, Y, X)
