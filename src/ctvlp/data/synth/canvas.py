"""Tissue classes, their HU, and the canvas the phantom and its findings are painted on.

Every voxel holds one tissue class (uint8); the HU volume is a lookup of the classes plus noise.
Region masks (RadGenome names) and finding masks (label slugs) are kept beside the classes as
boolean arrays on the same (Z, Y, X) grid.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np

from ctvlp.data.synth.geometry import Grid, Shape


class Tissue(IntEnum):
    """Tissue classes, in no particular order."""

    AIR = 0
    TABLE = 1
    SKIN = 2
    FAT = 3
    MUSCLE = 4
    MEDIASTINAL_FAT = 5
    CORTICAL_BONE = 6
    MARROW = 7
    RIB = 8
    CANAL = 9
    LUNG = 10
    BLOOD = 11
    AIRWAY_WALL = 12
    MYOCARDIUM = 13
    ESOPHAGUS = 14
    THYROID = 15
    LIVER = 16
    SPLEEN = 17
    STOMACH = 18
    GAS = 19
    # findings (their HU is scaled towards the host tissue by the difficulty's contrast)
    NODULE = 30
    FLUID = 31
    CALCIFICATION = 32
    NODE = 33
    EMPHYSEMA = 34
    ATELECTASIS = 35
    CONSOLIDATION = 36
    GROUND_GLASS = 37
    MOSAIC = 38
    METAL = 39


# HU without and with intravenous contrast.
HU: dict[Tissue, tuple[float, float]] = {
    Tissue.AIR: (-1000, -1000), Tissue.TABLE: (80, 80), Tissue.SKIN: (30, 30), Tissue.FAT: (-100, -100),
    Tissue.MUSCLE: (50, 60), Tissue.MEDIASTINAL_FAT: (-90, -90), Tissue.CORTICAL_BONE: (900, 900),
    Tissue.MARROW: (380, 380), Tissue.RIB: (650, 650), Tissue.CANAL: (25, 25), Tissue.LUNG: (-860, -860),
    Tissue.BLOOD: (40, 260), Tissue.AIRWAY_WALL: (40, 40), Tissue.MYOCARDIUM: (45, 120),
    Tissue.ESOPHAGUS: (40, 55), Tissue.THYROID: (100, 160), Tissue.LIVER: (60, 115),
    Tissue.SPLEEN: (50, 125), Tissue.STOMACH: (25, 30), Tissue.GAS: (-1000, -1000),
    Tissue.NODULE: (30, 60), Tissue.FLUID: (2, 2), Tissue.CALCIFICATION: (850, 850),
    Tissue.NODE: (40, 75), Tissue.EMPHYSEMA: (-990, -990), Tissue.ATELECTASIS: (30, 70),
    Tissue.CONSOLIDATION: (35, 60), Tissue.GROUND_GLASS: (-560, -560), Tissue.MOSAIC: (-700, -700),
    Tissue.METAL: (3000, 3000),
}

LUNG_TISSUES: tuple[Tissue, ...] = (
    Tissue.LUNG, Tissue.BLOOD, Tissue.NODULE, Tissue.EMPHYSEMA, Tissue.ATELECTASIS,
    Tissue.CONSOLIDATION, Tissue.GROUND_GLASS, Tissue.MOSAIC,
)
"""Classes that lie inside the lung region (vessels, and the lung's own findings)."""


_LOOKUPS: dict[tuple[Tissue, ...], np.ndarray] = {}


def member(classes: np.ndarray, tissues: tuple[Tissue, ...]) -> np.ndarray:
    """``np.isin(classes, tissues)`` for uint8 classes (comparisons or a cached lookup: both faster)."""
    if len(tissues) <= 4:
        out = classes == tissues[0]
        for tissue in tissues[1:]:
            out |= classes == tissue
        return out
    lookup = _LOOKUPS.get(tissues)
    if lookup is None:
        lookup = np.zeros(256, dtype=bool)
        lookup[list(tissues)] = True
        _LOOKUPS[tissues] = lookup
    return np.take(lookup, classes)


class Canvas:
    """Tissue classes and named masks of one reconstruction being painted."""

    def __init__(self, grid: Grid):
        self.grid = grid
        self.tissue = np.zeros(grid.shape, dtype=np.uint8)  # (Z, Y, X)
        self.regions: dict[str, np.ndarray] = {}
        self.findings: dict[str, np.ndarray] = {}
        self.finding_hu: dict[Tissue, float] = {}
        """HU of finding classes in this volume (set by the findings painter, difficulty-scaled)."""
        self.body = np.ones(grid.a.shape, dtype=bool)
        """(Y, X) body outline and table: where noise is added (air outside stays -1000)."""
        self.heart_scale = 1.0
        """Heart size factor (above 1 with cardiomegaly), read by the anatomy painter."""

    def paint(self, shape: Shape | None, tissue: Tissue, only: tuple[Tissue, ...] | None = None) -> np.ndarray | None:
        """Set ``tissue`` inside ``shape`` (only over voxels of classes ``only``); the painted part."""
        if shape is None:
            return None
        box, inside = shape
        view = self.tissue[box]
        if only is not None:
            inside = inside & member(view, only)
        view[inside] = tissue
        return inside

    def mark(self, masks: dict[str, np.ndarray], name: str, shape: Shape | None) -> None:
        """OR ``shape`` into the full-size mask ``masks[name]`` (created empty on first use)."""
        if name not in masks:
            masks[name] = np.zeros(self.grid.shape, dtype=bool)
        if shape is not None:
            masks[name][shape[0]] |= shape[1]

    def region(self, name: str, shape: Shape | None) -> None:
        self.mark(self.regions, name, shape)

    def finding(self, name: str, shape: Shape | None) -> None:
        self.mark(self.findings, name, shape)

    def hu_table(self, contrast: bool) -> np.ndarray:
        """(256,) float32 lookup: tissue class -> HU for this volume."""
        table = np.full(256, -1000.0, dtype=np.float32)
        for tissue, (plain, enhanced) in HU.items():
            table[tissue] = enhanced if contrast else plain
        for tissue, value in self.finding_hu.items():
            table[tissue] = value
        return table
