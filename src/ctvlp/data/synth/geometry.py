"""The voxel grid of one synthetic reconstruction and the shape primitives painted on it.

The phantom is described in *body units*: ``a`` (towards the patient's left), ``b`` (towards
posterior) and ``c`` (towards superior), 1 unit = the half-width of the body in mm (``Pose.unit_mm``).
A :class:`Grid` maps every voxel of a (Z, Y, X) array to body units once (with the patient's in-plane
shift and rotation); a primitive returns the index box it touches and a boolean array over that box,
so each shape costs only the voxels near it. The array axes are stored as LPS on disk: array index
x grows towards the patient's left, y towards posterior, z towards superior.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

Box = tuple[slice, slice, slice]
"""(z, y, x) slices of a sub-box of the grid."""


@dataclass(frozen=True)
class Pose:
    """Where the patient lies in the scanner, shared by the reconstructions of one scan."""

    unit_mm: float
    """Half-width of the body in mm: one body unit."""
    shift_mm: tuple[float, float]
    """In-plane offset of the body centre from the grid centre (x, y) in mm."""
    angle_deg: float
    """In-plane rotation of the body (a few degrees)."""
    c_range: tuple[float, float]
    """Inferior and superior ends of the scanned range, in body units."""


@dataclass(frozen=True)
class GridSpec:
    """The sampling of one reconstruction."""

    matrix: int
    """Rows = columns of every slice."""
    xy_mm: float
    """In-plane spacing in mm."""
    z_mm: float
    """Slice spacing in mm."""

    def n_slices(self, pose: Pose) -> int:
        span_mm = (pose.c_range[1] - pose.c_range[0]) * pose.unit_mm
        return int(round(span_mm / self.z_mm)) + 1

    def affine(self, pose: Pose) -> np.ndarray:
        """(4, 4) array index (x, y, z) -> RAS+ mm for an LPS-stored array centred on the origin."""
        nz = self.n_slices(pose)
        steps = np.array([self.xy_mm, self.xy_mm, self.z_mm])
        lps_origin = -steps * (np.array([self.matrix, self.matrix, nz]) - 1) / 2.0
        lps_origin[2] += np.mean(pose.c_range) * pose.unit_mm
        flip = np.array([-1.0, -1.0, 1.0])  # LPS -> RAS
        affine = np.eye(4)
        affine[:3, :3] = np.diag(flip * steps)
        affine[:3, 3] = flip * lps_origin
        return affine


class Grid:
    """Body-unit coordinates of every voxel of one reconstruction."""

    def __init__(self, spec: GridSpec, pose: Pose):
        self.spec, self.pose = spec, pose
        n, nz = spec.matrix, spec.n_slices(pose)
        self.shape = (nz, n, n)
        centre = (n - 1) / 2.0
        x_mm = (np.arange(n) - centre) * spec.xy_mm - pose.shift_mm[0]  # (X,)
        y_mm = (np.arange(n) - centre) * spec.xy_mm - pose.shift_mm[1]  # (Y,)
        cos, sin = np.cos(np.radians(pose.angle_deg)), np.sin(np.radians(pose.angle_deg))
        self._rotation = (float(cos), float(sin))
        self.a = ((cos * x_mm[None, :] + sin * y_mm[:, None]) / pose.unit_mm).astype(np.float32)  # (Y, X)
        self.b = ((-sin * x_mm[None, :] + cos * y_mm[:, None]) / pose.unit_mm).astype(np.float32)  # (Y, X)
        c0 = pose.c_range[0]
        self.c = (c0 + np.arange(nz) * spec.z_mm / pose.unit_mm).astype(np.float32)  # (Z,)

    def box(self, lo, hi) -> Box | None:
        """Index box covering the body-unit box [lo, hi] (a, b, c); None when it misses the grid."""
        cos, sin = self._rotation
        corners = [(a, b) for a in (float(lo[0]), float(hi[0])) for b in (float(lo[1]), float(hi[1]))]
        scale, centre = self.pose.unit_mm / self.spec.xy_mm, (self.spec.matrix - 1) / 2.0
        x0, y0 = self.pose.shift_mm[0] / self.spec.xy_mm + centre, self.pose.shift_mm[1] / self.spec.xy_mm + centre
        xs = _span([(cos * a - sin * b) * scale + x0 for a, b in corners], self.spec.matrix)
        ys = _span([(sin * a + cos * b) * scale + y0 for a, b in corners], self.spec.matrix)
        step = self.spec.z_mm / self.pose.unit_mm
        zs = _span([(float(lo[2]) - self.pose.c_range[0]) / step, (float(hi[2]) - self.pose.c_range[0]) / step],
                   self.shape[0])
        if xs is None or ys is None or zs is None:
            return None
        return zs, ys, xs

    def coords(self, box: Box) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(1, y, x), (1, y, x), (z, 1, 1) body-unit coordinates over ``box``, ready to broadcast."""
        zs, ys, xs = box
        return self.a[ys, xs][None], self.b[ys, xs][None], self.c[zs][:, None, None]


def _span(positions: list[float], n: int) -> slice | None:
    lo, hi = math.floor(min(positions)) - 1, math.ceil(max(positions)) + 2
    lo, hi = max(lo, 0), min(hi, n)
    return slice(lo, hi) if hi > lo else None


Shape = tuple[Box, np.ndarray]
"""A box and the (z, y, x) boolean inside-the-shape array over it."""


def ellipsoid(grid: Grid, centre, radii, angle_deg: float = 0.0) -> Shape | None:
    """Ellipsoid with semi-axes ``radii`` (a, b, c), rotated by ``angle_deg`` in the a-b plane."""
    centre, radii = np.asarray(centre, float), np.asarray(radii, float)
    reach = np.array([radii[:2].max(), radii[:2].max(), radii[2]])
    box = grid.box(centre - reach, centre + reach)
    if box is None:
        return None
    a, b, c = grid.coords(box)
    cos, sin = np.cos(np.radians(angle_deg)), np.sin(np.radians(angle_deg))
    da, db = a - centre[0], b - centre[1]
    u, v = (cos * da + sin * db) / radii[0], (-sin * da + cos * db) / radii[1]
    return box, (u * u + v * v) + ((c - centre[2]) / radii[2]) ** 2 <= 1.0  # (z, y, x)


def capsule_distance(grid: Grid, p0, p1, reach: float) -> tuple[Box, np.ndarray] | None:
    """Box around segment p0-p1 widened by ``reach`` and the distance of each voxel to the segment."""
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    box = grid.box(np.minimum(p0, p1) - reach, np.maximum(p0, p1) + reach)
    if box is None:
        return None
    a, b, c = grid.coords(box)
    d = p1 - p0
    ra, rb, rc = a - p0[0], b - p0[1], c - p0[2]  # (1, y, x), (1, y, x), (z, 1, 1)
    t = (ra * d[0] + rb * d[1] + rc * d[2]) / max(float(d @ d), 1e-12)  # (z, y, x)
    np.clip(t, 0.0, 1.0, out=t)
    dist2 = (ra - t * d[0]) ** 2
    dist2 += (rb - t * d[1]) ** 2
    dist2 += (rc - t * d[2]) ** 2
    return box, np.sqrt(dist2, out=dist2)


def tube(grid: Grid, points, radius: float) -> list[Shape]:
    """Tube of ``radius`` along the polyline ``points`` (one shape per segment)."""
    shapes = []
    for p0, p1 in zip(points[:-1], points[1:]):
        found = capsule_distance(grid, p0, p1, radius)
        if found is not None:
            shapes.append((found[0], found[1] <= radius))
    return shapes
