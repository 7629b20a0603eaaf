"""Model-grid maps back on the input's own grid, in world coordinates.

The model sees a volume after ``preprocess`` (reoriented to RAS, resampled, cropped to the body; stored
z-first) and the sampler (in-plane centre crop/pad to ``size``, depth windows and padding). A map on the
sampler's grid is first cut to the part that holds real voxels (the in-plane crop of the preprocessed
grid; padding is dropped), which gives it an exact (z, y, x) -> RAS affine; then every input voxel
centre x_in = A_in [i, j, k, 1] is looked up in it at the fractional index A_map^-1 x_in (trilinear).
Input voxels whose centre falls outside the map's voxel centres get 0: outside the model's field of
view (cropped away as air outside the body, or beyond the sampler's in-plane size).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def inplane_affine(affine_zyx: np.ndarray, y0: int, x0: int) -> np.ndarray:
    """The affine of a (z, y, x) grid whose index (0, 0, 0) is (0, y0, x0) of ``affine_zyx``'s grid."""
    shift = np.eye(4)
    shift[1, 3], shift[2, 3] = y0, x0
    return affine_zyx @ shift


def to_grid(values: np.ndarray, affine: np.ndarray, shape: tuple[int, int, int], target_affine: np.ndarray,
            ) -> np.ndarray:
    """values (Z, Y, X) with index -> world ``affine`` resampled onto a grid of ``shape`` with index ->
    world ``target_affine`` (trilinear, 0 outside): float32 of ``shape``."""
    matrix = np.linalg.inv(affine) @ np.asarray(target_affine, dtype=np.float64)  # target index -> values index
    return ndimage.affine_transform(np.asarray(values, dtype=np.float32), matrix, output_shape=tuple(shape),
                                    order=1, mode="constant", cval=0.0)
