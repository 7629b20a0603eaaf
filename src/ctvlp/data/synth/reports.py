"""Report text that agrees with a scan's labels, written per RadGenome region.

Every present label is stated positively in the findings (from one of several phrasings) and again in
the impressions; an absent label is either not mentioned or negated. Organs without findings get a
normal-organ sentence. Each findings sentence carries its RadGenome region, which gives the
``*_region_report.csv`` rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ctvlp.data.labels import CTRATE_LABELS
from ctvlp.data.synth.findings import Finding

REGION_ORDER: tuple[str, ...] = (
    "trachea and bronchie", "mediastinum", "heart", "esophagus", "thyroid", "lung", "pleura", "abdomen", "bone",
)
LABEL_REGION: dict[str, str] = {
    "Medical material": "heart", "Arterial wall calcification": "mediastinum", "Cardiomegaly": "heart",
    "Pericardial effusion": "heart", "Coronary artery wall calcification": "heart", "Hiatal hernia": "esophagus",
    "Lymphadenopathy": "mediastinum", "Emphysema": "lung", "Atelectasis": "lung", "Lung nodule": "lung",
    "Lung opacity": "lung", "Pulmonary fibrotic sequela": "lung", "Pleural effusion": "pleura",
    "Mosaic attenuation pattern": "lung", "Peribronchial thickening": "trachea and bronchie",
    "Consolidation": "lung", "Bronchiectasis": "lung", "Interlobular septal thickening": "lung",
}
POSITIVE: dict[str, tuple[str, ...]] = {
    "Lung nodule": ("A {size} mm solid nodule is seen in the {side} lung {lobe}.",
                    "A nodule of {size} mm is seen in the {lobe} of the {side} lung.",
                    "Nodule of {size} mm in the {side} {lobe}.",
                    "A pulmonary nodule measuring {size} mm is present in the {side} lung {lobe}."),
    "Emphysema": ("Centrilobular emphysema is seen in the upper lobes.",
                  "Emphysematous changes are present in the upper lobe of the {side} lung.",
                  "Areas of emphysema, predominantly in the upper zones of {lungs}."),
    "Lung opacity": ("Ground-glass opacity in the {side} lung {lobe}.",
                     "Patchy ground-glass opacities are seen in the {lobe} of the {side} lung.",
                     "An area of ground-glass opacity measuring {size} mm in the {side} {lobe}."),
    "Consolidation": ("Consolidation in the {side} lung {lobe}.",
                      "There is an area of consolidation in the {lobe} of the {side} lung.",
                      "Airspace consolidation measuring {size} mm in the {side} {lobe}."),
    "Atelectasis": ("Subsegmental atelectasis in the {side} lower lobe.",
                    "Plate-like atelectasis at the base of the {side} lung.",
                    "Atelectasis in the posterobasal segment of the {side} lower lobe."),
    "Mosaic attenuation pattern": ("Mosaic attenuation pattern in both lungs.",
                                   "The lung parenchyma shows a mosaic attenuation pattern.",
                                   "Patchy mosaic attenuation pattern, more evident in the {side} lung."),
    "Pleural effusion": ("{Adj} pleural effusion up to {size} mm thick.",
                         "Pleural effusion is present {where}, measuring {size} mm.",
                         "There is pleural effusion {where}."),
    "Pericardial effusion": ("Pericardial effusion up to {size} mm thick.",
                             "There is fluid in the pericardial space, consistent with pericardial effusion.",
                             "Pericardial effusion measuring {size} mm is noted."),
    "Cardiomegaly": ("Cardiomegaly is present.", "The heart is enlarged, consistent with cardiomegaly.",
                     "Cardiomegaly with an increased cardiothoracic ratio."),
    "Coronary artery wall calcification": ("Calcified plaques in the {vessel} coronary artery.",
                                           "Coronary artery calcification is seen along the {vessel} coronary artery.",
                                           "Atherosclerotic calcifications in the coronary arteries."),
    "Arterial wall calcification": ("Atherosclerotic calcified plaques in the wall of the {segment}.",
                                    "Calcific atheroma in the {segment}.",
                                    "Calcified plaques are seen in the wall of the thoracic aorta."),
    "Hiatal hernia": ("Hiatal hernia.", "A sliding hiatal hernia of {size} mm is seen.",
                      "Hiatal hernia is present at the distal esophagus."),
    "Lymphadenopathy": ("Enlarged lymph nodes in the {station} station, the largest {size} mm.",
                        "Mediastinal lymphadenopathy, {station}, up to {size} mm.",
                        "Pathologically enlarged {station} lymph node measuring {size} mm (lymphadenopathy)."),
    "Medical material": ("A {kind} is seen in the {side} chest wall, its {lead} extending into the {end}.",
                         "{Kind} in the {side} anterior chest wall with the {lead} ending in the {end}."),
}
NEGATIVE: dict[str, tuple[str, ...]] = {
    "Lung nodule": ("No pulmonary nodule was detected.", "There is no nodule in either lung."),
    "Emphysema": ("No emphysema.", "There is no emphysema."),
    "Lung opacity": ("No ground-glass opacity.", "No opacity is seen in the lungs."),
    "Consolidation": ("No consolidation.", "There is no consolidation in either lung."),
    "Atelectasis": ("No atelectasis.", "There is no atelectasis."),
    "Mosaic attenuation pattern": ("No mosaic attenuation pattern.",),
    "Pleural effusion": ("No pleural effusion.", "There is no pleural effusion on either side."),
    "Pericardial effusion": ("No pericardial effusion.", "There is no pericardial effusion."),
    "Cardiomegaly": ("No cardiomegaly.",),
    "Coronary artery wall calcification": ("No coronary artery calcification.",),
    "Arterial wall calcification": ("No calcified plaque in the wall of the thoracic aorta.",),
    "Hiatal hernia": ("No hiatal hernia.",),
    "Lymphadenopathy": ("No mediastinal lymphadenopathy.", "No pathologically enlarged lymph nodes."),
    "Bronchiectasis": ("No bronchiectasis.",),
    "Peribronchial thickening": ("No peribronchial thickening.",),
    "Interlobular septal thickening": ("No interlobular septal thickening.",),
    "Pulmonary fibrotic sequela": ("No fibrotic sequelae in the lungs.",),
}
NORMAL: dict[str, tuple[str, ...]] = {
    "trachea and bronchie": ("Trachea and both main bronchi are patent.",
                             "The trachea and main bronchi are open, without obstruction."),
    "mediastinum": ("Mediastinal structures are within normal limits.",
                    "The thoracic aorta is of normal diameter.", "Mediastinal vessels are of normal calibre."),
    "heart": ("Heart size is normal.", "Cardiac contours are normal."),
    "esophagus": ("The thoracic esophagus is unremarkable.", "Esophagus is of normal calibre."),
    "thyroid": ("Thyroid gland is of normal size.", "The visible thyroid is unremarkable."),
    "lung": ("Both lungs are clear.", "Lung parenchyma is normal.", "Aeration of both lungs is normal."),
    "pleura": ("Pleural surfaces are smooth.", "The pleural spaces are normal."),
    "abdomen": ("Upper abdominal organs in the sections are unremarkable.",
                "Liver and spleen in the sections are of normal size."),
    "bone": ("Bony structures in the study area are normal.", "Mild degenerative changes in the thoracic spine."),
}
IMPRESSION: dict[str, tuple[str, ...]] = {
    "Lung nodule": ("Pulmonary nodule in the {side} lung.", "Lung nodule ({size} mm)."),
    "Emphysema": ("Emphysema.", "Emphysematous changes in the lungs."),
    "Lung opacity": ("Ground-glass opacity in the {side} lung.", "Lung opacity in the {side} {lobe}."),
    "Consolidation": ("Consolidation in the {side} lung.", "Consolidation in the {side} {lobe}."),
    "Atelectasis": ("Atelectasis in the {side} lower lobe.", "Subsegmental atelectasis."),
    "Mosaic attenuation pattern": ("Mosaic attenuation pattern.",),
    "Pleural effusion": ("{Adj} pleural effusion.", "Pleural effusion {where}."),
    "Pericardial effusion": ("Pericardial effusion.",),
    "Cardiomegaly": ("Cardiomegaly.",),
    "Coronary artery wall calcification": ("Coronary artery calcification.",),
    "Arterial wall calcification": ("Aortic atherosclerotic calcification.", "Calcified plaques in the aortic wall."),
    "Hiatal hernia": ("Hiatal hernia.",),
    "Lymphadenopathy": ("Mediastinal lymphadenopathy.",),
    "Medical material": ("{Kind} in place.",),
}
CLINICAL: tuple[str, ...] = (
    "Cough and shortness of breath.", "Chest pain.", "Fever and cough for one week.", "Preoperative evaluation.",
    "Follow-up after COVID-19 infection.", "Weight loss; screening for malignancy.", "Dyspnea on exertion.",
    "Smoker, routine screening.", "Not given.", "Trauma, rule out injury.",
)
TECHNIQUE: tuple[str, ...] = (
    "{contrast} thorax CT was acquired in the supine position with {thickness} mm sections.",
    "{contrast} chest CT: axial images from the lung apices to the upper abdomen, mediastinal and lung windows.",
    "Helical {contrast_lower} CT of the chest; multiplanar reconstructions were evaluated.",
)


@dataclass
class Report:
    """The report sections of one scan and its findings sentences per region."""

    clinical: str
    technique: str
    findings: str
    impressions: str
    regions: list[tuple[str, str]]
    """(RadGenome region, sentence) for every findings sentence."""


def _facts(finding: Finding, unit_mm: float) -> dict[str, str]:
    """Template slots of a finding, from its largest lesion."""
    items = finding.items
    first = max(items, key=lambda it: it.get("size_mm", 0.0)) if items else {}
    sides = sorted({it["side"] for it in items if "side" in it})
    one = sides[0] if len(sides) == 1 else None
    facts = {"side": first.get("side", "right"), "adj": one or "bilateral",
             "where": f"on the {one}" if one else "on both sides",
             "lungs": f"the {one} lung" if one else "both lungs",
             "lobe": first.get("lobe", "lower lobe"), "size": f"{first.get('size_mm', 0.0):.0f}",
             "station": first.get("station", ""), "segment": first.get("segment", "thoracic aorta"),
             "vessel": first.get("vessel", "")}
    if "depth" in first or "thickness" in first:
        facts["size"] = f"{(first.get('depth') or first.get('thickness')) * unit_mm:.0f}"
    if "kind" in first:
        pacemaker = first["kind"] == "pacemaker"
        facts.update(kind="pacemaker" if pacemaker else "venous port", lead="lead" if pacemaker else "catheter",
                     end="right ventricle" if pacemaker else "superior vena cava")
    return facts


def _fill(template: str, facts: dict[str, str]) -> str:
    return template.format(**facts, **{k.capitalize(): v.capitalize() for k, v in facts.items()})


def _region(label: str, present: dict[str, Finding]) -> str:
    """RadGenome region of a label's sentences (a port catheter's tip lies in the mediastinum)."""
    if label == "Medical material" and label in present and present[label].items[0]["kind"] == "port":
        return "mediastinum"
    return LABEL_REGION[label]


def write_report(rng: np.random.Generator, findings: list[Finding], unit_mm: float, contrast: bool,
                 thickness_mm: float, thyroid_seen: bool) -> Report:
    """Findings (per region), impressions, clinical information and technique of one scan."""
    present = {f.label: f for f in findings}
    by_region: dict[str, list[str]] = {r: [] for r in REGION_ORDER}
    for label in CTRATE_LABELS:
        region = _region(label, present)
        if label in present:
            by_region[region].append(_fill(str(rng.choice(POSITIVE[label])), _facts(present[label], unit_mm)))
        elif label in NEGATIVE and rng.random() < 0.4:
            by_region[region].append(str(rng.choice(NEGATIVE[label])))
    sentences: list[tuple[str, str]] = []
    for region in REGION_ORDER:
        if region == "thyroid" and not thyroid_seen:
            continue
        if not any(_region(label, present) == region for label in present):
            by_region[region].insert(0, str(rng.choice(NORMAL[region])))
        sentences += [(region, s) for s in by_region[region]]
    impressions = [_fill(str(rng.choice(IMPRESSION[l])), _facts(present[l], unit_mm)) for l in CTRATE_LABELS
                   if l in present]
    word = "Contrast-enhanced" if contrast else "Non-contrast"
    technique = str(rng.choice(TECHNIQUE)).format(contrast=word, contrast_lower=word.lower(),
                                                  thickness=f"{thickness_mm:g}")
    return Report(clinical=str(rng.choice(CLINICAL)), technique=technique,
                  findings=" ".join(s for _, s in sentences),
                  impressions=" ".join(impressions) or str(rng.choice(("No significant abnormality.",
                                                                        "Normal chest CT."))),
                  regions=sentences)
