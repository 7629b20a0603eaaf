"""Abnormalities: where each rendered CT-RATE label goes, how big and how bright it is, per difficulty.

A scan draws the geometry of its present findings once (:func:`sample_findings`, in body units,
shared by its reconstructions); :func:`paint_findings` draws them on a reconstruction's canvas and
records one mask per label (``slug(label)``). Sizes are fractions of the body half-width, so a
finding covers the same number of voxels whatever the spacing: at ``easy`` a lung nodule's radius is
0.12 units, about 3.3 voxels of a 64 x 64 resampling. ``large`` (1.8x, full contrast) sizes them for
the 3 mm voxels of `ctvlp demo`, where an ``easy`` nodule would span about one voxel.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ctvlp.data.synth.canvas import HU, Canvas, Tissue
from ctvlp.data.synth.phantom import Anatomy, aorta_path, diaphragm


@dataclass(frozen=True)
class Difficulty:
    """How large and how contrasted the findings are."""

    size: float
    """Factor on every finding's size (nodule radius 0.12 units x size)."""
    contrast: float
    """Share of the full HU difference between a finding and its host tissue that is kept."""


DIFFICULTIES: dict[str, Difficulty] = {
    "large": Difficulty(1.8, 1.0), "easy": Difficulty(1.0, 1.0), "medium": Difficulty(0.7, 0.7),
    "hard": Difficulty(0.45, 0.45),
}

RENDERED: tuple[str, ...] = (
    "Medical material", "Arterial wall calcification", "Cardiomegaly", "Pericardial effusion",
    "Coronary artery wall calcification", "Hiatal hernia", "Lymphadenopathy", "Emphysema",
    "Atelectasis", "Lung nodule", "Lung opacity", "Pleural effusion", "Mosaic attenuation pattern",
    "Consolidation",
)
"""CT-RATE labels the phantom draws; the other four are always 0."""

HOST: dict[Tissue, Tissue] = {
    Tissue.NODULE: Tissue.LUNG, Tissue.EMPHYSEMA: Tissue.LUNG, Tissue.ATELECTASIS: Tissue.LUNG,
    Tissue.CONSOLIDATION: Tissue.LUNG, Tissue.GROUND_GLASS: Tissue.LUNG, Tissue.MOSAIC: Tissue.LUNG,
    Tissue.CALCIFICATION: Tissue.BLOOD, Tissue.NODE: Tissue.MEDIASTINAL_FAT,
}
"""Finding tissue -> the tissue whose HU it fades into as contrast drops (others keep their HU)."""


def slug(label: str) -> str:
    """'Lung nodule' -> 'lung_nodule' (the finding mask's file stem)."""
    return label.lower().replace(" ", "_")


@dataclass
class Finding:
    """One present label of a scan: the shapes to paint and what the report may say."""

    label: str
    items: list[dict] = field(default_factory=list)
    """Per lesion: centre/radii (body units) plus report facts (side, lobe, size_mm, ...)."""


def _lobe(side: str, centre) -> str:
    if centre[2] > 0.3:
        return "upper lobe"
    if side == "right" and centre[2] > 0.0 and centre[1] < 0.05:
        return "middle lobe"
    return "lower lobe"


def lung_point(rng: np.random.Generator, anatomy: Anatomy, margin: float, low: float = -0.35,
               high: float = 0.7) -> tuple[np.ndarray, str]:
    """A point at least ``margin`` inside a lung (analytic test against the phantom's shapes)."""
    ra, rb, cb = anatomy.cavity
    heart_c, heart_r = np.array(anatomy.heart[:3]), anatomy.heart_radii(1.3)
    for _ in range(200):
        side = rng.choice([-1.0, 1.0])
        p = np.array([side * rng.uniform(0.25, 0.95) * ra, cb + rng.uniform(-0.8, 0.8) * rb, rng.uniform(low, high)])
        narrowing = np.sqrt(max(0.0, 1 - (max(p[2] - 0.45, 0) / (anatomy.apex - 0.45)) ** 2))
        inside = (p[0] / (ra * narrowing - margin)) ** 2 + ((p[1] - cb) / (rb * narrowing - margin)) ** 2 < 1
        clear = abs(p[0]) > 0.2 + margin and p[2] > diaphragm(anatomy, p[0], p[1]) + margin
        off_heart = np.sum(((p - heart_c) / (heart_r + margin)) ** 2) > 1
        if inside and clear and off_heart and p[2] < anatomy.apex - margin - 0.1:
            return p, ("left" if side > 0 else "right")
    raise RuntimeError("no lung point found")  # unreachable for the sampled anatomies


def _lung_blobs(rng, anatomy, unit_mm, count, radius, low=-0.35, high=0.75) -> list[dict]:
    items = []
    for _ in range(count):
        r = radius * rng.uniform(0.85, 1.15)
        centre, side = lung_point(rng, anatomy, r * 0.6, low, high)
        radii = r * rng.uniform(0.8, 1.2, 3)
        items.append({"centre": centre, "radii": radii, "side": side, "lobe": _lobe(side, centre),
                      "size_mm": round(float(2 * radii.mean() * unit_mm), 1)})
    return items


def _sample(label: str, rng: np.random.Generator, anatomy: Anatomy, size: float, unit_mm: float) -> list[dict]:
    """The lesions of one present label (body-unit geometry + report facts)."""
    if label == "Lung nodule":
        return _lung_blobs(rng, anatomy, unit_mm, int(rng.integers(1, 4)), 0.12 * size)
    if label == "Emphysema":
        return _lung_blobs(rng, anatomy, unit_mm, int(rng.integers(3, 7)), 0.13 * size, 0.15, 0.7)
    if label == "Consolidation":
        return _lung_blobs(rng, anatomy, unit_mm, int(rng.integers(1, 3)), 0.2 * size, -0.35, 0.3)
    if label == "Lung opacity":
        return _lung_blobs(rng, anatomy, unit_mm, int(rng.integers(1, 4)), 0.16 * size)
    if label == "Mosaic attenuation pattern":
        return _lung_blobs(rng, anatomy, unit_mm, int(rng.integers(4, 8)), 0.17 * size)
    if label == "Atelectasis":
        return _atelectasis(rng, anatomy, size)
    if label == "Pleural effusion":
        sides = [["right"], ["left"], ["right", "left"]][int(rng.integers(0, 3))]
        return [{"side": s, "depth": 0.2 * size * rng.uniform(0.9, 1.2)} for s in sides]
    if label == "Pericardial effusion":
        return [{"thickness": 0.12 * size * rng.uniform(0.9, 1.2)}]
    if label == "Cardiomegaly":
        return [{"scale": 1.0 + 0.3 * size * rng.uniform(0.9, 1.1)}]
    if label == "Arterial wall calcification":
        return _plaques(rng, aorta_path(anatomy), anatomy.aorta_radius, int(rng.integers(3, 7)), 0.07 * size)
    if label == "Coronary artery wall calcification":
        return _coronary(rng, int(rng.integers(2, 5)), 0.065 * size)
    if label == "Hiatal hernia":
        r = 0.13 * size * rng.uniform(0.9, 1.15)
        centre = np.array([0.04, 0.2, anatomy.domes[1] + 0.05 + r])
        return [{"centre": centre, "radii": np.array([r, r * 0.85, r]), "size_mm": round(float(2 * r * unit_mm), 1)}]
    if label == "Lymphadenopathy":
        return _nodes(rng, int(rng.integers(2, 5)), 0.09 * size, unit_mm)
    if label == "Medical material":
        return [_device(rng, anatomy, size)]
    raise KeyError(label)


NODE_STATIONS: dict[str, tuple[float, float, float]] = {
    "right paratracheal": (-0.11, 0.03, 0.42), "subcarinal": (0.0, 0.2, 0.06), "prevascular": (0.0, -0.24, 0.42),
    "aortopulmonary window": (0.13, 0.02, 0.33), "right hilar": (-0.24, -0.02, 0.0), "left hilar": (0.25, 0.0, -0.02),
}


def _nodes(rng, count, radius, unit_mm) -> list[dict]:
    names = rng.choice(list(NODE_STATIONS), size=count, replace=False)
    items = []
    for name in names:
        radii = radius * rng.uniform(0.9, 1.2) * np.array([1.0, 0.85, 1.3])
        items.append({"centre": np.array(NODE_STATIONS[str(name)]), "radii": radii, "station": str(name),
                      "size_mm": round(float(2 * radii[:2].mean() * unit_mm), 1)})
    return items


def _atelectasis(rng, anatomy: Anatomy, size: float) -> list[dict]:
    ra, rb, cb = anatomy.cavity
    items = []
    for side in rng.choice([-1.0, 1.0], size=int(rng.integers(1, 3)), replace=False):
        a = side * 0.5 * ra
        centre = np.array([a, cb + 0.62 * rb, diaphragm(anatomy, a, cb + 0.62 * rb) + 0.12])
        radii = np.array([0.24, 0.08, 0.1]) * size * rng.uniform(0.9, 1.2)
        items.append({"centre": centre, "radii": radii, "side": "left" if side > 0 else "right",
                      "lobe": "lower lobe", "angle": float(side * rng.uniform(10, 30))})
    return items


def _plaques(rng, path, aorta_r, count, radius) -> list[dict]:
    """Spheres centred on the aortic wall (clipped to the aorta when painted)."""
    items = []
    for _ in range(count):
        i = int(rng.integers(1, len(path) - 2))
        p0, p1 = np.array(path[i]), np.array(path[i + 1])
        d = (p1 - p0) / np.linalg.norm(p1 - p0)
        side = rng.normal(size=3)
        side -= (side @ d) * d
        centre = p0 + rng.uniform(0.1, 0.9) * (p1 - p0) + 0.7 * aorta_r * side / np.linalg.norm(side)
        segment = ("aortic arch" if i in (2, 3, 4, 5) else "descending aorta" if i > 5 else "ascending aorta")
        items.append({"centre": centre, "radii": np.full(3, radius * rng.uniform(0.9, 1.2)), "segment": segment})
    return items


def _coronary(rng, count, radius) -> list[dict]:
    """Spots on the heart surface near the base, where the coronary arteries run (unit directions)."""
    vessels = ("left anterior descending", "circumflex", "right")
    items = []
    for _ in range(count):
        direction = rng.normal(size=3) * np.array([1.0, 1.0, 0.5]) + np.array([0.0, -0.6, 0.2])
        items.append({"direction": direction / np.linalg.norm(direction), "radius": radius * rng.uniform(0.9, 1.2),
                      "vessel": str(rng.choice(vessels))})
    return items


def _device(rng, anatomy: Anatomy, size: float) -> dict:
    kind = str(rng.choice(["pacemaker", "port"]))
    side = -1.0 if kind == "port" else float(rng.choice([-1.0, 1.0]))
    b_edge = -anatomy.ap * np.sqrt(1 - 0.5 ** 2)
    generator = np.array([side * 0.5, b_edge + 0.02 + anatomy.fat / 2 + 0.03, 0.62])
    end = (np.array(anatomy.heart[:3]) + np.array([0.12, -0.1, -0.05]) if kind == "pacemaker"
           else np.array([-0.11, -0.07, anatomy.heart[2] + 0.22]))
    lead = [generator, np.array([side * 0.3, b_edge + 0.2, 0.78]), np.array([-0.12, -0.08, 0.6]), end]
    s = max(size, 0.6)
    return {"kind": kind, "side": "left" if side > 0 else "right", "centre": generator,
            "radii": np.array([0.13, 0.04, 0.1]) * s, "lead": lead, "lead_radius": 0.045 * s}


def sample_findings(rng: np.random.Generator, anatomy: Anatomy, present: list[str], difficulty: Difficulty,
                    unit_mm: float) -> list[Finding]:
    """Geometry and report facts of every present rendered label of one scan."""
    return [Finding(label, _sample(label, rng, anatomy, difficulty.size, unit_mm)) for label in present]


def set_finding_hu(canvas: Canvas, difficulty: Difficulty, contrast_agent: bool) -> None:
    """Fade each finding's HU towards its host tissue by the difficulty's contrast."""
    col = 1 if contrast_agent else 0
    for tissue, host in HOST.items():
        full, base = HU[tissue][col], HU[host][col]
        canvas.finding_hu[tissue] = base + difficulty.contrast * (full - base)
