"""Drawing a scan's findings (from ``findings.sample_findings``) on a reconstruction's canvas.

Each label's mask is what was actually painted, clipped at the end to the voxels that still hold the
label's tissue (a later finding may cover an earlier one), so a mask never claims voxels that show
something else.
"""

from __future__ import annotations

import numpy as np

from ctvlp.data.synth.canvas import Canvas, Tissue, member
from ctvlp.data.synth.findings import Finding, slug
from ctvlp.data.synth.geometry import ellipsoid, tube
from ctvlp.data.synth.phantom import Anatomy

LUNG_ONLY = (Tissue.LUNG,)
LUNG_AND_VESSELS = (Tissue.LUNG, Tissue.BLOOD)
BODY = tuple(t for t in Tissue if t not in (Tissue.AIR, Tissue.TABLE))

# label -> (tissue painted, tissues it may cover); painted in this order
BLOBS: dict[str, tuple[Tissue, tuple[Tissue, ...]]] = {
    "Mosaic attenuation pattern": (Tissue.MOSAIC, LUNG_ONLY),
    "Emphysema": (Tissue.EMPHYSEMA, LUNG_ONLY),
    "Lung opacity": (Tissue.GROUND_GLASS, LUNG_ONLY),
    "Consolidation": (Tissue.CONSOLIDATION, (*LUNG_AND_VESSELS, Tissue.MOSAIC, Tissue.EMPHYSEMA)),
    "Atelectasis": (Tissue.ATELECTASIS, (*LUNG_AND_VESSELS, Tissue.MOSAIC, Tissue.GROUND_GLASS)),
    "Lung nodule": (Tissue.NODULE, (*LUNG_AND_VESSELS, Tissue.MOSAIC, Tissue.GROUND_GLASS, Tissue.EMPHYSEMA)),
    "Lymphadenopathy": (Tissue.NODE, (Tissue.MEDIASTINAL_FAT, Tissue.LUNG)),
}
TISSUES: dict[str, tuple[Tissue, ...]] = {
    **{label: (tissue,) for label, (tissue, _) in BLOBS.items()},
    "Pleural effusion": (Tissue.FLUID,), "Pericardial effusion": (Tissue.FLUID,),
    "Arterial wall calcification": (Tissue.CALCIFICATION,),
    "Coronary artery wall calcification": (Tissue.CALCIFICATION,),
    "Hiatal hernia": (Tissue.STOMACH, Tissue.GAS), "Medical material": (Tissue.METAL,),
}
"""Tissues a label's mask may hold after painting (cardiomegaly's mask is the heart region)."""


def paint_findings(canvas: Canvas, anatomy: Anatomy, findings: list[Finding]) -> None:
    """Paint every finding and record its mask; call after the anatomy, before ``finish_regions``."""
    by_label = {f.label: f for f in findings}
    for label, (tissue, only) in BLOBS.items():
        for item in by_label.get(label, Finding(label)).items:
            shape = ellipsoid(canvas.grid, item["centre"], item["radii"], item.get("angle", 0.0))
            if shape is not None and tissue != Tissue.NODE:  # lung findings stay in the lung (not on the aorta)
                shape = (shape[0], shape[1] & canvas.regions["lung_space"][shape[0]])
            canvas.finding(slug(label), _painted(canvas, shape, tissue, only))
    painters = {"Pleural effusion": _pleural_effusion, "Pericardial effusion": _pericardial_effusion,
                "Arterial wall calcification": _aortic_plaques, "Coronary artery wall calcification": _coronary,
                "Hiatal hernia": _hernia, "Medical material": _device}
    for label, painter in painters.items():
        if label in by_label:
            for item in by_label[label].items:
                painter(canvas, anatomy, item)
    if "Cardiomegaly" in by_label:
        canvas.findings["cardiomegaly"] = canvas.regions["heart"].copy()
    if "pleural_effusion" in canvas.findings:
        canvas.regions["pleura"] |= canvas.findings["pleural_effusion"]
    for label, tissues in TISSUES.items():
        if slug(label) in canvas.findings:
            canvas.findings[slug(label)] &= member(canvas.tissue, tissues)


def _painted(canvas: Canvas, shape, tissue: Tissue, only) -> tuple | None:
    inside = canvas.paint(shape, tissue, only)
    return None if inside is None else (shape[0], inside)


def _pleural_effusion(canvas: Canvas, anatomy: Anatomy, item: dict) -> None:
    """Fluid layer along the posterior chest wall, thick at the back and thinning anteriorly."""
    ra, rb, cb = anatomy.cavity
    side = 1.0 if item["side"] == "left" else -1.0
    lo, hi = np.array([min(0, side), cb - rb, -2.0]), np.array([max(0, side), cb + rb, 0.45])
    box = canvas.grid.box(lo, hi)
    if box is None:
        return
    a, b, c = canvas.grid.coords(box)
    radius = np.sqrt((a / ra) ** 2 + ((b - cb) / rb) ** 2)  # (1, y, x) 1 at the cavity wall
    weight = np.clip((b - cb) / rb + 0.1, 0, 1.1) / 1.1  # (1, y, x) 1 posteriorly
    top = 0.45 - 0.5 * (1 - weight)  # the fluid's upper edge rises posteriorly
    space = canvas.regions["lung_space"][box] | canvas.regions["pleura"][box]
    thick = item["depth"] * weight  # (1, y, x) local layer thickness; no layer thinner than 0.05
    fluid = ((1 - radius) * rb < thick) & (thick > 0.05) & (c < top) & space & (side * a > 0)
    canvas.finding("pleural_effusion", _painted(canvas, (box, fluid), Tissue.FLUID, (Tissue.LUNG, Tissue.BLOOD,
                                                                                     Tissue.MEDIASTINAL_FAT)))


def _pericardial_effusion(canvas: Canvas, anatomy: Anatomy, item: dict) -> None:
    """Fluid shell of ``thickness`` around the heart."""
    radii = anatomy.heart_radii(canvas.heart_scale)
    centre, angle = anatomy.heart[:3], anatomy.heart[4]
    outer = ellipsoid(canvas.grid, centre, radii + item["thickness"], angle)
    if outer is None:
        return
    shell = outer[1] & ~canvas.regions["heart"][outer[0]] & ~canvas.regions.get("aorta", np.zeros(1, bool))[outer[0]]
    canvas.finding("pericardial_effusion", _painted(canvas, (outer[0], shell), Tissue.FLUID,
                                                    (Tissue.MEDIASTINAL_FAT, Tissue.LUNG, Tissue.BLOOD)))


def _aortic_plaques(canvas: Canvas, anatomy: Anatomy, item: dict) -> None:
    shape = ellipsoid(canvas.grid, item["centre"], item["radii"])
    if shape is not None and "aorta" in canvas.regions:
        shape = (shape[0], shape[1] & canvas.regions["aorta"][shape[0]])
        canvas.finding("arterial_wall_calcification", _painted(canvas, shape, Tissue.CALCIFICATION, BODY))


def _coronary(canvas: Canvas, anatomy: Anatomy, item: dict) -> None:
    """A calcified spot on the heart surface, in the direction ``item['direction']`` from its centre."""
    radii = anatomy.heart_radii(canvas.heart_scale) + 0.01
    local = radii * item["direction"]  # on the ellipsoid: sum((local / radii)^2) == 1
    rot = np.radians(anatomy.heart[4])
    offset = np.array([np.cos(rot) * local[0] - np.sin(rot) * local[1],
                       np.sin(rot) * local[0] + np.cos(rot) * local[1], local[2]])
    shape = ellipsoid(canvas.grid, np.array(anatomy.heart[:3]) + offset, np.full(3, item["radius"]))
    if shape is not None:  # never on the aortic root
        shape = (shape[0], shape[1] & ~canvas.regions["aorta"][shape[0]])
    only = (Tissue.MEDIASTINAL_FAT, Tissue.MYOCARDIUM, Tissue.LUNG, Tissue.FLUID, Tissue.BLOOD)
    canvas.finding("coronary_artery_wall_calcification", _painted(canvas, shape, Tissue.CALCIFICATION, only))


def _hernia(canvas: Canvas, anatomy: Anatomy, item: dict) -> None:
    """Stomach above the diaphragm behind the heart (displacing it), gas in its upper part."""
    shape = ellipsoid(canvas.grid, item["centre"], item["radii"])
    if shape is None:
        return
    box, inside = shape
    inside = inside & ~canvas.regions["aorta"][box]
    painted = canvas.paint((box, inside), Tissue.STOMACH, (Tissue.MEDIASTINAL_FAT, Tissue.LUNG, Tissue.BLOOD,
                                                          Tissue.ESOPHAGUS, Tissue.MYOCARDIUM, Tissue.FLUID))
    canvas.regions["heart"][box] &= ~painted  # the hernia pushes the heart forward
    gas = painted & (canvas.grid.coords(box)[2] > item["centre"][2] + 0.1 * item["radii"][2])
    canvas.tissue[box][gas] = Tissue.GAS
    canvas.finding("hiatal_hernia", (box, painted))


def _device(canvas: Canvas, anatomy: Anatomy, item: dict) -> None:
    """Pacemaker generator or port reservoir in the chest wall and its lead/catheter."""
    generator = ellipsoid(canvas.grid, item["centre"], item["radii"])
    canvas.finding("medical_material", _painted(canvas, generator, Tissue.METAL, BODY))
    for shape in tube(canvas.grid, item["lead"], item["lead_radius"]):
        canvas.finding("medical_material", _painted(canvas, shape, Tissue.METAL, BODY))
