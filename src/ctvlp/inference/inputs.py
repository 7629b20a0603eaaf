"""What inference accepts as a CT volume: checked from the header before any voxel is read.

:func:`read_ct` takes a path (anything :func:`ctvlp.load_volume` reads) or a :class:`~ctvlp.Volume`
and refuses, with the file and the reason:

* a volume whose voxel count exceeds the limit, from the header alone, before the voxels are read
  (:mod:`ctvlp.io.header`, as ``load_volume`` does for every command; here with the ``max_voxels``
  argument, CLI ``--max-voxels``);
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
from ctvlp.io.header import check_voxels, max_voxels
from ctvlp.io.load import check_ct, load_volume
from ctvlp.io.volume import Volume

MIN_SLICES = 2


def check_shape(path: str | Path | None, shape: Sequence[int], limit: int) -> None:
    """Refuse too many voxels or a single slice (see the module docstring)."""
    check_voxels(path, shape, limit)
    spatial = tuple(int(s) for s in shape[:3])
    if len(spatial) == 3 and min(spatial) < MIN_SLICES:
        raise BadVolumeError(path, f"shape {spatial} has {min(spatial)} slice along an axis: the model encodes "
                                   f"3-D volumes, give the whole series (at least {MIN_SLICES} slices)")


def read_ct(source: str | os.PathLike | Volume, limit: int | None = None) -> Volume:
    """A checked CT :class:`Volume` from a path or a Volume (see the module docstring)."""
    limit = max_voxels(limit)
    if isinstance(source, Volume):
        check_shape(source.path, source.shape, limit)
        check_ct(source)
        return source
    volume = load_volume(source, max_voxels=limit)  # the voxel limit checked on the header first
    check_shape(source, volume.shape, limit)
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
