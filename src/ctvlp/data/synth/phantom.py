"""Procedural chest anatomy in body units (see ``geometry``), painted as tissue classes.

One :class:`Anatomy` per patient (body habitus, organ sizes and positions, the lung vessel tree);
:func:`paint_anatomy` draws it on a :class:`Canvas`: table, skin/fat/muscle, ribs, sternum, spine,
lungs with vessels, pleural space, mediastinal fat, heart with chambers, aorta, superior vena cava,
trachea and main bronchi, esophagus, thyroid, and the upper abdomen (liver, stomach, spleen) under
the diaphragm. Region masks use RadGenome-ChestCT's region names.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ctvlp.data.synth.canvas import LUNG_TISSUES, Canvas, Tissue, member
from ctvlp.data.synth.geometry import Grid, ellipsoid, tube

SKIN = 0.02
PLEURAL_GAP = 0.02
MEDIASTINUM_CENTRE = 0.03
SPINE_CENTRE = (0.0, 0.40)


@dataclass(frozen=True)
class Anatomy:
    """Per-patient anatomy, in body units (1 = half the body's width)."""

    ap: float
    """Antero-posterior semi-axis of the body outline."""
    fat: float
    """Subcutaneous fat thickness."""
    muscle: float
    """Chest-wall muscle thickness."""
    heart: tuple[float, float, float, float, float]
    """Heart centre a, b, c, size factor, long-axis angle (degrees)."""
    aorta_radius: float
    """Radius of the aorta."""
    domes: tuple[float, float]
    """Heights (c) of the right and left diaphragm domes."""
    apex: float
    """Height (c) of the lung apices."""
    vessels: tuple[tuple[tuple[float, float, float], tuple[float, float, float], float], ...]
    """Lung vessel segments (start, end, radius)."""
    sex: str
    """'M' or 'F' (metadata and reports only)."""
    age: int
    """Years (metadata and reports only)."""

    @property
    def cavity(self) -> tuple[float, float, float]:
        """Thoracic cavity: lateral semi-axis, AP semi-axis, AP centre."""
        wall = SKIN + self.fat + self.muscle
        return 1.0 - wall, self.ap - wall - 0.03, -0.015

    def heart_radii(self, scale: float = 1.0) -> np.ndarray:
        return np.array([0.31, 0.25, 0.26]) * self.heart[3] * scale


def sample_anatomy(rng: np.random.Generator) -> Anatomy:
    heart = (0.13 + rng.uniform(-0.03, 0.03), -0.1 + rng.uniform(-0.03, 0.03), -0.27 + rng.uniform(-0.04, 0.04),
             rng.uniform(0.93, 1.07), rng.uniform(25, 45))
    domes = (rng.uniform(-0.48, -0.38), rng.uniform(-0.56, -0.46))
    return Anatomy(ap=rng.uniform(0.62, 0.74), fat=rng.uniform(0.03, 0.11), muscle=rng.uniform(0.05, 0.08),
                   heart=heart, aorta_radius=rng.uniform(0.075, 0.095), domes=domes,
                   apex=rng.uniform(0.86, 0.95), vessels=_vessel_tree(rng, domes),
                   sex=str(rng.choice(["M", "F"])), age=int(rng.integers(25, 90)))


def _vessel_tree(rng: np.random.Generator, domes) -> tuple:
    """Three generations of branching segments from each hilum into the lung."""
    segments = []
    for side in (-1.0, 1.0):
        stack = [((side * 0.24, 0.08, -0.02), np.array([side, 0.0, 0.0]), 0.04, 0) for _ in range(4)]
        while stack:
            start, direction, radius, depth = stack.pop()
            length = 0.32 * 0.72 ** depth
            direction = direction + rng.normal(0, 0.45, 3)
            direction = direction / np.linalg.norm(direction)
            if depth == 0:
                direction = np.array([side * 0.8, rng.uniform(-0.3, 0.3), rng.uniform(-0.7, 0.7)])
                direction /= np.linalg.norm(direction)
            end = tuple(float(v) for v in np.asarray(start) + length * direction)
            segments.append((start, end, radius))
            if depth < 3:
                for _ in range(2):
                    stack.append((end, direction, radius * 0.75, depth + 1))
    return tuple(segments)


def _ellipse2d(grid: Grid, ra: float, rb: float, cb: float = 0.0, ca: float = 0.0) -> np.ndarray:
    return ((grid.a - ca) / ra) ** 2 + ((grid.b - cb) / rb) ** 2  # (Y, X)


def diaphragm(anatomy: Anatomy, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Height (c) of the diaphragm above each (a, b): the higher of two domes."""
    right = anatomy.domes[0] - 1.6 * ((a + 0.35) ** 2 + (b - 0.05) ** 2)
    left = anatomy.domes[1] - 1.6 * ((a - 0.35) ** 2 + (b - 0.05) ** 2)
    return np.maximum(right, left)


def paint_anatomy(canvas: Canvas, anatomy: Anatomy, table: bool) -> None:
    """Paint the whole normal anatomy and record the region masks (lung is finished later)."""
    _paint_wall(canvas, anatomy, table)
    _paint_cavity(canvas, anatomy)
    _paint_mediastinum(canvas, anatomy)
    _paint_abdomen(canvas, anatomy)
    _paint_skeleton(canvas, anatomy)


def _paint_wall(canvas: Canvas, anatomy: Anatomy, table: bool) -> None:
    grid = canvas.grid
    plane = np.zeros(grid.a.shape, dtype=np.uint8)  # (Y, X) the same on every slice
    if table:
        top = anatomy.ap + 0.03 + 0.12 * grid.a ** 2
        plane[(grid.b > top) & (grid.b < top + 0.06) & (np.abs(grid.a) < 1.1)] = Tissue.TABLE
    layers = ((0.0, Tissue.SKIN), (SKIN, Tissue.FAT), (SKIN + anatomy.fat, Tissue.MUSCLE))
    for inset, tissue in layers:
        plane[_ellipse2d(grid, 1.0 - inset, anatomy.ap - inset) <= 1.0] = tissue
    canvas.tissue[:] = plane[None]
    canvas.body = plane != Tissue.AIR


def _paint_cavity(canvas: Canvas, anatomy: Anatomy) -> None:
    """Mediastinal fat in the cavity, lungs (above the diaphragm, outside the mediastinum), pleura."""
    grid = canvas.grid
    ra, rb, cb = anatomy.cavity
    narrowing = np.sqrt(np.clip(1 - ((grid.c - 0.45) / (anatomy.apex - 0.45)) ** 2, 0, 1))  # (Z,)
    narrowing = np.where(grid.c < 0.45, 1.0, narrowing)[:, None, None]  # (Z, 1, 1)
    radius2 = _ellipse2d(grid, ra, rb, cb)[None]  # (1, Y, X)
    cavity = radius2 <= narrowing ** 2  # (Z, Y, X)
    above = grid.c[:, None, None] > diaphragm(anatomy, grid.a, grid.b)[None]  # (Z, Y, X)
    band = 0.13 + 0.05 * (grid.c > 0.0)[:, None, None]  # (Z, 1, 1) mediastinal half-width
    taper = 0.7 + 0.4 * np.clip((grid.b - cb) / rb + 0.5, 0, 1)  # (Y, X) narrower behind the sternum
    lateral = (np.abs(grid.a - MEDIASTINUM_CENTRE) / taper)[None] > band  # (Z, Y, X)
    spine = (((grid.a - SPINE_CENTRE[0]) ** 2 + (grid.b - SPINE_CENTRE[1]) ** 2) < 0.19 ** 2)[None]
    inner = radius2 <= (narrowing * (1 - PLEURAL_GAP / rb)) ** 2
    canvas.tissue[cavity] = Tissue.MEDIASTINAL_FAT
    lung = inner & above & lateral & ~spine
    canvas.tissue[lung] = Tissue.LUNG
    canvas.regions["lung_space"] = lung
    canvas.regions["pleura"] = cavity & above & lateral & ~spine & ~inner
    canvas.regions["cavity"] = cavity & above
    canvas.regions["abdomen"] = (radius2 <= 1.0) & ~above
    for start, end, radius in anatomy.vessels:
        for shape in tube(grid, [start, end], radius):
            canvas.paint(shape, Tissue.BLOOD, only=(Tissue.LUNG,))


def _paint_mediastinum(canvas: Canvas, anatomy: Anatomy) -> None:
    grid = canvas.grid
    a0, b0, c0, _, angle = anatomy.heart
    centre, radii = (a0, b0, c0), anatomy.heart_radii(canvas.heart_scale)
    canvas.paint(ellipsoid(grid, centre, radii * 1.08, angle), Tissue.MEDIASTINAL_FAT)
    heart = ellipsoid(grid, centre, radii, angle)
    canvas.paint(heart, Tissue.MYOCARDIUM)
    canvas.region("heart", heart)
    rot = np.radians(angle)
    normal = np.array([-np.sin(rot), np.cos(rot)])
    for side, size in ((-1, 0.3), (1, 0.33)):  # right ventricle anterior, left ventricle posterior
        offset = side * 0.38 * radii[1] * normal
        chamber = (a0 + offset[0], b0 + offset[1], c0)
        canvas.paint(ellipsoid(grid, chamber, radii * np.array([0.6, size, 0.65]), angle), Tissue.BLOOD)
    r = anatomy.aorta_radius
    aorta = tube(grid, aorta_path(anatomy), r)
    for shape in aorta:
        canvas.paint(shape, Tissue.BLOOD)
        canvas.region("aorta", shape)
    for shape in tube(grid, [(-0.12, -0.08, 0.7), (-0.12, -0.07, 0.35), (-0.1, -0.06, c0 + 0.12)], 0.055):
        canvas.paint(shape, Tissue.BLOOD)  # superior vena cava
    _paint_airways(canvas, c0)
    esophagus = [(0.03, 0.21, 1.3), (0.04, 0.21, 0.2), (0.06, 0.2, anatomy.domes[1] + 0.05), (0.25, 0.0, -0.75)]
    for shape in tube(grid, esophagus, 0.045):
        canvas.paint(shape, Tissue.ESOPHAGUS)
        canvas.region("esophagus", shape)
    for side in (-1, 1):
        lobe = ellipsoid(grid, (side * 0.11 + 0.0, -0.03, 1.02), (0.06, 0.05, 0.1))
        painted = canvas.paint(lobe, Tissue.THYROID, only=(Tissue.MEDIASTINAL_FAT, Tissue.MUSCLE, Tissue.FAT))
        canvas.region("thyroid", None if painted is None else (lobe[0], painted))


def aorta_path(anatomy: Anatomy) -> list[tuple[float, float, float]]:
    """Centre line: root, ascending aorta, arch passing left of the trachea, descending aorta."""
    a0, b0, c0 = anatomy.heart[:3]
    return [(a0 - 0.08, b0 + 0.02, c0 + 0.1), (0.0, -0.15, 0.25), (0.03, -0.14, 0.42), (0.13, -0.08, 0.52),
            (0.22, 0.06, 0.53), (0.22, 0.22, 0.45), (0.2, 0.28, 0.3), (0.16, 0.27, -0.5), (0.1, 0.22, -1.3)]


def _paint_airways(canvas: Canvas, heart_c: float) -> None:
    grid = canvas.grid
    carina = (0.0, 0.1, 0.18)
    paths = ([(0.0, 0.07, 1.3), carina], [carina, (-0.2, 0.12, 0.06), (-0.3, 0.13, -0.02)],
             [carina, (0.22, 0.14, 0.01), (0.32, 0.15, -0.08)])
    for path, outer in zip(paths, (0.075, 0.05, 0.05)):
        for shape in tube(grid, path, outer):
            canvas.paint(shape, Tissue.AIRWAY_WALL)
            canvas.region("trachea and bronchie", shape)
    for path, outer in zip(paths, (0.075, 0.05, 0.05)):
        for shape in tube(grid, path, outer * 0.75):
            canvas.paint(shape, Tissue.AIR)


def _paint_abdomen(canvas: Canvas, anatomy: Anatomy) -> None:
    grid = canvas.grid
    below = canvas.regions["abdomen"]
    organs = ((Tissue.LIVER, (-0.3, 0.0, -0.95), (0.6, 0.45, 0.55)),
              (Tissue.STOMACH, (0.35, -0.12, -0.85), (0.3, 0.22, 0.3)),
              (Tissue.SPLEEN, (0.5, 0.3, -0.85), (0.18, 0.14, 0.3)))
    for tissue, centre, radii in organs:
        shape = ellipsoid(grid, centre, radii)
        if shape is not None:
            canvas.paint((shape[0], shape[1] & below[shape[0]]), tissue)
    gas = ellipsoid(grid, (0.35, -0.2, anatomy.domes[1] - 0.15), (0.14, 0.1, 0.07))
    if gas is not None:
        canvas.paint(gas, Tissue.GAS, only=(Tissue.STOMACH,))


def _paint_skeleton(canvas: Canvas, anatomy: Anatomy) -> None:
    grid, t = canvas.grid, canvas.tissue
    ra, rb, cb = anatomy.cavity
    # spine: vertebral bodies (cortex + marrow, discs between), canal and posterior arch
    body = ((grid.a - SPINE_CENTRE[0]) ** 2 + (grid.b - SPINE_CENTRE[1]) ** 2)  # (Y, X)
    canal = (grid.a ** 2 + (grid.b - 0.6) ** 2)
    disc = (np.mod(grid.c + 0.02, 0.2) < 0.035)[:, None, None]  # (Z, 1, 1)
    arch = ((canal < 0.1 ** 2) & (canal > 0.055 ** 2)) | ((np.abs(grid.a) < 0.025) & (grid.b > 0.6) & (grid.b < anatomy.ap - 0.05))
    t[:, arch] = Tissue.CORTICAL_BONE
    t[:, canal <= 0.055 ** 2] = Tissue.CANAL
    t[:, body < 0.12 ** 2] = Tissue.CORTICAL_BONE
    t[(body < 0.1 ** 2)[None] & ~disc] = Tissue.MARROW
    t[(body < 0.12 ** 2)[None] & disc] = Tissue.MUSCLE
    # sternum: anterior midline plate
    sternum = ellipsoid(grid, (0.0, cb - rb - 0.035, 0.1), (0.09, 0.035, 0.6))
    canvas.paint(sternum, Tissue.RIB)
    _paint_ribs(canvas, anatomy)
    canvas.regions["bone"] = member(t, (Tissue.CORTICAL_BONE, Tissue.MARROW, Tissue.RIB))


def _paint_ribs(canvas: Canvas, anatomy: Anatomy) -> None:
    """Ribs on a ring just outside the cavity, sloping down anteriorly; one (Z, P) test for all."""
    grid = canvas.grid
    ra, rb, cb = anatomy.cavity
    ring = np.abs(np.sqrt(_ellipse2d(grid, ra + 0.035, rb + 0.035, cb)) - 1.0) * rb < 0.03  # (Y, X)
    ring &= np.abs(grid.a) > 0.16
    ys, xs = np.nonzero(ring)  # (P,)
    drop = 0.22 * (1 - np.clip((grid.b[ys, xs] - cb) / rb, -1, 1)) / 2  # (P,) anterior ribs lower
    phase = np.mod(grid.c[:, None] + drop[None, :] - 0.05, 0.17)  # (Z, P)
    hit = (np.abs(phase - 0.085) > 0.085 - 0.022) & (grid.c[:, None] + drop[None, :] < anatomy.apex)
    zs, ps = np.nonzero(hit)
    canvas.tissue[zs, ys[ps], xs[ps]] = Tissue.RIB


def finish_regions(canvas: Canvas) -> None:
    """Lung = lung space still holding lung-type tissue; mediastinum = the rest of the cavity."""
    lung_tissue = member(canvas.tissue, LUNG_TISSUES)
    lung = canvas.regions.pop("lung_space") & lung_tissue
    cavity = canvas.regions.pop("cavity")
    canvas.regions["lung"] = lung
    canvas.regions["mediastinum"] = cavity & ~lung & ~canvas.regions["pleura"] & ~canvas.regions["bone"]
