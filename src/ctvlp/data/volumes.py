"""The volume the sampler reads, whatever holds it: one protocol, its in-memory implementation, a z-window.

:class:`VolumeSource` is what ``ctvlp.data.sampling.draw_sample`` (and evaluation's window sampler) read
from a volume on the cache's grid: an id, the (Z, Y, X) shape, the spacing, mask names and organ
z-extents, and slabs of slices read on demand. Two implementations hold the voxels:

- ``ctvlp.data.cache.CachedVolume``: a prepared cache's volume folder, memory-mapped (training,
  evaluation on a cache);
- :class:`MemoryVolume`: a volume preprocessed in memory (inference on a user's file, evaluation's real
  masked cases), seen by the sampler as the same volume in a cache would be (the spacing rounded as
  ``meta.json`` stores it, slabs copied out, masks as bool).

:class:`ZWindow` is no third holder: it shows slices ``[z0, z1)`` of either of them as a volume of its own,
reading through to it (evaluation's fixed windows of a cached volume would otherwise be read whole).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from ctvlp.data.preprocess import PreprocessedVolume


@runtime_checkable
class VolumeSource(Protocol):
    """What the sampler reads from a volume (``CachedVolume``, :class:`MemoryVolume` and :class:`ZWindow`
    fit). Arrays are on the cache's grid: int16 HU slabs (z, Y, X), bool masks (M, z, Y, X)."""

    vid: str
    shape: tuple[int, int, int]
    """(Z, Y, X)."""
    spacing_zyx: np.ndarray
    """(3,) mm along z, y, x."""
    mask_names: list[str]
    z_extents: dict[str, tuple[int, int]]
    """Mask name -> [z0, z1) of its non-empty slices (organ text without a z-prior); may be empty."""

    def slab(self, z0: int, z1: int) -> np.ndarray:
        """int16 HU (z1 - z0, Y, X), a copy."""
        ...

    def mask_slab(self, z0: int, z1: int, names: Sequence[str] | None = None) -> np.ndarray:
        """bool (M, z1 - z0, Y, X) for ``names`` (default: all, in ``mask_names`` order); KeyError naming the
        masks the volume does not have."""
        ...


def spacing_of(affine_zyx: np.ndarray) -> np.ndarray:
    """(3,) spacing in mm of a (4, 4) z, y, x affine, rounded to 6 decimals as a cache's meta.json stores it."""
    return np.linalg.norm(np.asarray(affine_zyx, np.float64)[:3, :3], axis=0).round(6)


def check_mask_names(vid: str, have: Sequence[str], names: Sequence[str] | None) -> list[str]:
    """``names`` (default: all of ``have``) as a list; KeyError naming the ones ``vid`` does not have."""
    names = list(have) if names is None else list(names)
    unknown = set(names) - set(have)
    if unknown:
        raise KeyError(f"{vid} has no mask(s) {sorted(unknown)}; it has {list(have)}")
    return names


class MemoryVolume:
    """A volume on the cache's grid held in memory: ``image`` (Z, Y, X) int16 HU, its ``affine_zyx`` and
    ``masks`` {name: (Z, Y, X) bool}. No z-extents (as the cache would compute from the masks): the
    sampler's organ text falls back as for a volume without organ masks."""

    def __init__(self, vid: str, image: np.ndarray, affine_zyx: np.ndarray,
                 masks: Mapping[str, np.ndarray] | None = None):
        self.vid, self.image, self.masks = vid, image, dict(masks or {})
        self.shape: tuple[int, int, int] = tuple(int(s) for s in image.shape)  # type: ignore[assignment]
        self.affine_zyx = np.asarray(affine_zyx, np.float64)
        self.spacing_zyx = spacing_of(self.affine_zyx)
        self.mask_names: list[str] = list(self.masks)
        self.z_extents: dict[str, tuple[int, int]] = {}

    @classmethod
    def from_prepared(cls, prepared: PreprocessedVolume, vid: str = "input") -> MemoryVolume:
        """The volume ``ctvlp.data.preprocess.preprocess`` made (masks: the body and any it was given)."""
        return cls(vid, prepared.image, prepared.affine_zyx, prepared.masks)

    def slab(self, z0: int, z1: int) -> np.ndarray:
        return np.array(self.image[z0:z1])

    def mask_slab(self, z0: int, z1: int, names: Sequence[str] | None = None) -> np.ndarray:
        names = check_mask_names(self.vid, self.mask_names, names)
        return np.stack([self.masks[n][z0:z1] for n in names])  # (M, z1 - z0, Y, X)


class ZWindow:
    """Slices ``[z0, z1)`` of a volume, masks included, seen as a volume of its own (evaluation draws
    fixed windows of a volume through ``draw_sample``; no z-extents, so text is the whole report's)."""

    organ_z_prior = False
    """A window is no whole scan: the prior's fractions of the depth do not apply to it."""

    def __init__(self, volume: VolumeSource, z0: int, z1: int):
        self._volume, self._z0 = volume, z0
        self.vid = volume.vid
        self.shape = (z1 - z0, *tuple(volume.shape)[1:])
        self.spacing_zyx = volume.spacing_zyx
        self.mask_names: list[str] = list(volume.mask_names)
        self.z_extents: dict[str, tuple[int, int]] = {}

    def slab(self, a: int, b: int) -> np.ndarray:
        return self._volume.slab(self._z0 + a, self._z0 + b)

    def mask_slab(self, a: int, b: int, names: Sequence[str] | None = None) -> np.ndarray:
        return self._volume.mask_slab(self._z0 + a, self._z0 + b, names)
