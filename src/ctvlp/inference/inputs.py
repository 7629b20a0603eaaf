"""What inference accepts as a CT volume: checked from the header before any voxel is read.

:func:`read_ct` takes a path (anything :func:`ctvlp.load_volume` reads) or a :class:`~ctvlp.Volume`
and refuses, with the file and the reason:

* a volume whose voxel count exceeds the limit, from the header alone, before the voxels are read
  (:mod:`ctvlp.io.header`, as ``load_volume`` does for every command; here with the ``max_voxels``
  argument, CLI ``--max-voxels``);
* a scan with fewer than :data:`MIN_SLICES` slices along an axis (a single slice or a localiser): the
  model is a 3-D encoder;
* intensities that are not CT in HU (an MR scan): :func:`ctvlp.io.load.check_ct`, as ``load_volume`` does.

The checked volume, preprocessed, reaches the sampler as a :class:`~ctvlp.data.volumes.MemoryVolume`
(the in-memory :class:`~ctvlp.data.volumes.VolumeSource`), so inference draws its input with the
evaluation's own code.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

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
