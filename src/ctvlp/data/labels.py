"""Label vocabularies. CT-RATE's 18 abnormality columns are the default vocabulary."""

from __future__ import annotations

CTRATE_LABELS: tuple[str, ...] = (
    "Medical material",
    "Arterial wall calcification",
    "Cardiomegaly",
    "Pericardial effusion",
    "Coronary artery wall calcification",
    "Hiatal hernia",
    "Lymphadenopathy",
    "Emphysema",
    "Atelectasis",
    "Lung nodule",
    "Lung opacity",
    "Pulmonary fibrotic sequela",
    "Pleural effusion",
    "Mosaic attenuation pattern",
    "Peribronchial thickening",
    "Consolidation",
    "Bronchiectasis",
    "Interlobular septal thickening",
)

# fVLM and HLIP report 16 labels: CT-RATE's 18 without these two.
CTRATE_16_DROPPED: tuple[str, ...] = ("Medical material", "Lymphadenopathy")
CTRATE_LABELS_16: tuple[str, ...] = tuple(l for l in CTRATE_LABELS if l not in CTRATE_16_DROPPED)

PROTOCOLS: dict[str, tuple[str, ...]] = {"18": CTRATE_LABELS, "16": CTRATE_LABELS_16}
"""Zero-shot label protocols by name (``ctvlp eval --protocol``): CT-RATE's 18 labels, and the 16 that fVLM
and HLIP report (without Medical material and Lymphadenopathy)."""
