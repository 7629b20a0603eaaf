"""The one volume type of ctvlp: HU array + the affine that places it in the world.

Conventions (nibabel's): ``affine @ [i, j, k, 1]`` is the RAS+ world position in millimetres of
the centre of voxel ``array[i, j, k]``. ``spacing[a]`` is the length of the affine's column ``a``:
the distance between neighbouring voxels along array axis ``a``. Nothing assumes that axis 0 is x
or that the volume is axis-aligned; use :meth:`Volume.orientation` to see the axis codes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np


@dataclass
class Volume:
    """A 3D CT volume in Hounsfield units.

    Attributes:
        array: (I, J, K) HU values; int16 when the stored values are exact integers in range,
            float32 otherwise.
        affine: (4, 4) float64, array index -> RAS+ world mm.
        path: the file or folder it was read from (None for volumes built in memory).
        meta: free-form provenance (reader, original dtype, rescale applied, series UID, ...).
    """

    array: np.ndarray
    affine: np.ndarray
    path: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.array.ndim != 3:
            raise ValueError(f"Volume array must be 3-D, got shape {self.array.shape}")
        if self.affine.shape != (4, 4):
            raise ValueError(f"Volume affine must be 4x4, got {self.affine.shape}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.array.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> np.ndarray:
        """(3,) mm between voxel centres along each array axis."""
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    @property
    def orientation(self) -> str:
        """Axis codes such as 'RAS' or 'LPS' (nibabel's aff2axcodes)."""
        return "".join(nib.aff2axcodes(self.affine))

    def index_to_world(self, ijk: np.ndarray) -> np.ndarray:
        """(N, 3) voxel indices (may be fractional) -> (N, 3) RAS mm."""
        ijk = np.atleast_2d(np.asarray(ijk, dtype=np.float64))
        return ijk @ self.affine[:3, :3].T + self.affine[:3, 3]

    def world_to_index(self, xyz: np.ndarray) -> np.ndarray:
        """(N, 3) RAS mm -> (N, 3) fractional voxel indices."""
        xyz = np.atleast_2d(np.asarray(xyz, dtype=np.float64))
        inv = np.linalg.inv(self.affine)
        return xyz @ inv[:3, :3].T + inv[:3, 3]

    def to_nifti(self, path: str | Path) -> None:
        """Write as NIfTI with this affine (viewable in any NIfTI viewer)."""
        img = nib.Nifti1Image(np.asarray(self.array), self.affine)
        img.set_qform(self.affine, code=1)
        img.set_sform(self.affine, code=1)
        nib.save(img, str(path))
