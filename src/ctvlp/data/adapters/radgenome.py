"""RadGenome-ChestCT on top of CT-RATE: region-grounded report sentences and region masks.

Layout::

    RG/{split}_region_report.csv          Volumename, Anatomy, Sentence (one row per sentence);
                                          split = train / valid (``validation_`` also accepted)
    RG/masks/seg_{stem}/{region}.nii.gz   one binary mask per region or finding

Region names ("trachea and bronchie", "left lung", ...) become organ ids through the report parser's
``canonical_organ``; a name it does not know keeps its own (lower-case) name for sentences and the
file stem for masks (e.g. a finding mask ``lung_nodule``). Rows without an anatomy are RadGenome's
whole-report rows and carry no region: they are not organ sentences.
"""

from __future__ import annotations

from pathlib import Path

from ctvlp.data.adapters.common import read_table, strip_nifti_suffix, text
from ctvlp.data.reports import canonical_organ
from ctvlp.errors import BadDatasetError

REGION_COLUMNS: tuple[str, ...] = ("Volumename", "Anatomy", "Sentence")
CSV_NAMES: dict[str, tuple[str, ...]] = {
    "train": ("train_region_report.csv",),
    "valid": ("valid_region_report.csv", "validation_region_report.csv"),
}


def region_csv(rg: Path, split: str) -> Path:
    """The region-report CSV of a CT-RATE split; BadDatasetError naming it when absent."""
    for name in CSV_NAMES[split]:
        if (rg / name).is_file():
            return rg / name
    raise BadDatasetError(rg / CSV_NAMES[split][0], "RadGenome region-report CSV not found")


def _canonical(name: str) -> str | None:
    return canonical_organ(name)


def read_region_sentences(rg: Path, splits: list[str]) -> dict[str, dict[str, list[str]]]:
    """{volume stem: {organ id: [sentence, ...]}} from the region CSVs of ``splits``."""
    if not rg.is_dir():
        raise BadDatasetError(rg, "RadGenome folder not found")
    out: dict[str, dict[str, list[str]]] = {}
    names: dict[str, str] = {}  # region name -> organ id, so each name is looked up once
    for split in splits:
        df = read_table(region_csv(rg, split), REGION_COLUMNS)
        for volume, anatomy, sentence in zip(df["Volumename"], df["Anatomy"], df["Sentence"]):
            region, sentence = text(anatomy).lower(), text(sentence)
            if not region or not sentence or not text(volume):
                continue
            if region not in names:
                names[region] = _canonical(region) or region
            organs = out.setdefault(strip_nifti_suffix(text(volume)), {})
            organs.setdefault(names[region], []).append(sentence)
    return out


def find_masks(rg: Path, stem: str) -> dict[str, str]:
    """{mask name: absolute path} of ``RG/masks/seg_{stem}/*.nii.gz`` ({} when there is none)."""
    folder = rg / "masks" / f"seg_{stem}"
    if not folder.is_dir():
        return {}
    masks: dict[str, str] = {}
    for path in sorted(folder.glob("*.nii.gz")):
        file_stem = strip_nifti_suffix(path.name)
        name = _canonical(file_stem) or file_stem
        masks[file_stem if name in masks else name] = str(path.absolute())
    return masks
