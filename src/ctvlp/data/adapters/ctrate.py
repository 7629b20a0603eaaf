"""CT-RATE (optionally with RadGenome-ChestCT) -> Manifest, and reading a CT-RATE volume in HU.

Layout (the synthetic cohort writes the same)::

    ROOT/dataset/{train,valid}/{split}_{p}/{split}_{p}_{s}/{split}_{p}_{s}_{r}.nii.gz
        (CT-RATE v2's ``train_fixed`` / ``valid_fixed`` folders are accepted too)
    ROOT/dataset/radiology_text_reports/{train,validation}_reports.csv
    ROOT/dataset/multi_abnormality_labels/{train,valid}_predicted_labels.csv
    ROOT/dataset/metadata/{train,validation}_metadata.csv

Splits: CT-RATE's ``valid`` is the community's test set and becomes ``test``; ``valid`` is carved out of
CT-RATE's train by patient (every scan and reconstruction of a patient lands in one split).
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ctvlp.data.adapters import labelmap
from ctvlp.data.adapters import radgenome as rgdata
from ctvlp.data.adapters.common import Skipped, read_table, split_by_patient, strip_nifti_suffix, text
from ctvlp.data.labels import CTRATE_LABELS
from ctvlp.data.manifest import Manifest
from ctvlp.data.reports import organ_sentences
from ctvlp.errors import BadDatasetError

SOURCE = "ct-rate"
TEST_SPLIT = {"train": "train", "valid": "test"}  # CT-RATE split -> ours
REPORT_COLUMNS: dict[str, str] = {
    "clinical": "ClinicalInformation_EN", "technique": "Technique_EN",
    "findings": "Findings_EN", "impressions": "Impressions_EN",
}
METADATA_COLUMNS: tuple[str, ...] = ("VolumeName", "XYSpacing", "ZSpacing", "RescaleIntercept", "RescaleSlope")
NAME = re.compile(r"^(?P<split>train|valid)_(?P<p>\d+)_(?P<s>[A-Za-z]+)_(?P<r>\d+)$")
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


@dataclass(frozen=True)
class SplitFiles:
    """Where one CT-RATE split keeps its volumes and tables (relative to ROOT/dataset)."""

    folders: tuple[str, ...]
    """Volume folder names, first existing one wins."""
    reports: str
    """Reports CSV."""
    labels: str
    """Predicted multi-abnormality labels CSV."""
    metadata: str
    """DICOM metadata CSV."""


SPLIT_FILES: dict[str, SplitFiles] = {
    "train": SplitFiles(("train", "train_fixed"), "radiology_text_reports/train_reports.csv",
                        "multi_abnormality_labels/train_predicted_labels.csv", "metadata/train_metadata.csv"),
    "valid": SplitFiles(("valid", "valid_fixed"), "radiology_text_reports/validation_reports.csv",
                        "multi_abnormality_labels/valid_predicted_labels.csv", "metadata/validation_metadata.csv"),
}


class _SkipRow(Exception):
    """A volume left out of the manifest; the message is the reason."""


@dataclass
class _Tables:
    """The three CSVs of one split, indexed by volume stem."""

    reports: pd.DataFrame
    labels: pd.DataFrame
    metadata: pd.DataFrame
    labels_path: Path


def _indexed(df: pd.DataFrame, key: str) -> pd.DataFrame:
    df = df[df[key].notna()]
    df.index = df[key].map(lambda v: strip_nifti_suffix(str(v).strip()))
    return df[~df.index.duplicated(keep="first")].drop(columns=[key])


def _read_tables(data: Path, split: str) -> _Tables:
    files = SPLIT_FILES[split]
    reports = read_table(data / files.reports, ("VolumeName", "Findings_EN", "Impressions_EN"))
    labels = read_table(data / files.labels, ("VolumeName",))
    metadata = read_table(data / files.metadata, METADATA_COLUMNS)
    return _Tables(_indexed(reports, "VolumeName"), _indexed(labels, "VolumeName"),
                   _indexed(metadata, "VolumeName"), data / files.labels)


def _present_splits(root: Path) -> dict[str, Path]:
    """CT-RATE split -> its volume folder, for the splits present under ROOT/dataset."""
    data = root / "dataset"
    if not data.is_dir():
        raise BadDatasetError(root, "not a CT-RATE root: it has no dataset/ folder")
    present = {}
    for split, files in SPLIT_FILES.items():
        folder = next((data / f for f in files.folders if (data / f).is_dir()), None)
        if folder is not None:
            present[split] = folder
    if not present:
        raise BadDatasetError(data, "has no volume folder (expected train/ or valid/)")
    return present


def _volume_files(folder: Path, split: str, skipped: Skipped) -> tuple[dict[str, Path], set[str]]:
    """Volume stem -> path of every ``*.nii.gz`` below ``folder`` whose name is a CT-RATE name, and the names
    found in two places or more: those are left out (every copy listed), since the tables describe one file
    of that name and not which."""
    found: dict[str, list[Path]] = {}
    for path in sorted(folder.rglob("*.nii.gz")):
        stem = strip_nifti_suffix(path.name)
        match = NAME.match(stem)
        if match is None or match["split"] != split:
            skipped.append((str(path), f"file name is not {split}_<patient>_<scan>_<recon>.nii.gz"))
        else:
            found.setdefault(stem, []).append(path.absolute())
    for stem, paths in found.items():
        if len(paths) > 1:
            skipped += [(str(p), f"volume name {stem} is in {len(paths)} places ({', '.join(map(str, paths))}): "
                                 "which file the reports and labels describe is ambiguous") for p in paths]
    return ({stem: paths[0] for stem, paths in found.items() if len(paths) == 1},
            {stem for stem, paths in found.items() if len(paths) > 1})


def parse_spacing(xy: object, z: object) -> list[float]:
    """Metadata spacing -> [x, y, z] mm along the file's array axes (i, j, k).

    ``XYSpacing`` is DICOM PixelSpacing, ``"[row, column]"`` (brackets, parentheses, commas or spaces
    are all accepted; one number means both); CT-RATE arrays are stored (x, y, z), so x = column.
    Raises ValueError when the strings are not 1-2 and 1 positive numbers.
    """
    pair = [float(v) for v in _NUMBER.findall(text(xy))]
    depth = [float(v) for v in _NUMBER.findall(text(z))]
    if len(pair) == 1:
        pair = pair * 2
    if len(pair) != 2 or len(depth) != 1:
        raise ValueError(f"unparseable spacing XYSpacing={text(xy)!r} ZSpacing={text(z)!r}")
    spacing = [pair[1], pair[0], depth[0]]
    if not all(math.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing must be positive, got {spacing}")
    return spacing


def parse_rescale(slope: object, intercept: object) -> tuple[float, float]:
    """Metadata rescale pair; blank -> NaN (unknown), non-numbers or slope 0 raise ValueError."""
    values = []
    for name, value in (("RescaleSlope", slope), ("RescaleIntercept", intercept)):
        raw = text(value)
        try:
            values.append(float(raw) if raw else math.nan)
        except ValueError:
            raise ValueError(f"{name} is not a number: {raw!r}") from None
    if values[0] == 0 or math.isinf(values[0]) or math.isinf(values[1]):
        raise ValueError(f"unusable rescale pair slope={values[0]} intercept={values[1]}")
    return values[0], values[1]


def _row(stem: str, split: str, files: dict[str, Path], tables: _Tables) -> dict:
    """The manifest row of one volume (without labels); raises _SkipRow with the reason."""
    if stem not in files:
        raise _SkipRow("report row but no volume file")
    if stem not in tables.reports.index:
        raise _SkipRow(f"no row in {SPLIT_FILES[split].reports}")
    if stem not in tables.metadata.index:
        raise _SkipRow(f"no row in {SPLIT_FILES[split].metadata}")
    meta = tables.metadata.loc[stem]
    try:
        spacing = parse_spacing(meta["XYSpacing"], meta["ZSpacing"])
        slope, intercept = parse_rescale(meta["RescaleSlope"], meta["RescaleIntercept"])
    except ValueError as err:
        raise _SkipRow(f"bad metadata: {err}") from None
    report = tables.reports.loc[stem]
    if not any(text(report.get(REPORT_COLUMNS[section])) for section in ("findings", "impressions")):
        raise _SkipRow(f"empty report (no {REPORT_COLUMNS['findings']} or {REPORT_COLUMNS['impressions']} text)")
    match = NAME.match(stem)
    return {
        "id": stem, "patient_id": f"{split}_{match['p']}", "scan_id": f"{split}_{match['p']}_{match['s']}",
        "recon_id": stem, "split": TEST_SPLIT[split], "path": str(files[stem]), "source": SOURCE,
        **{section: text(report.get(column)) for section, column in REPORT_COLUMNS.items()},
        "rescale_slope": slope, "rescale_intercept": intercept, "spacing_hint": json.dumps(spacing),
    }


def _parser_organ_sentences(findings: str) -> dict[str, list[str]]:
    return organ_sentences(findings)


def _grounding(frame: pd.DataFrame, rg: Path | None, regions: dict | None) -> tuple[list[str], list[str]]:
    """JSON organ_sentences (RadGenome's regions, else the report parser) and JSON masks per row."""
    organs, masks = [], []
    for stem, findings in zip(frame["id"], frame["findings"]):
        found = regions.get(stem) if regions is not None else None
        organs.append(json.dumps(found if found is not None else _parser_organ_sentences(findings)))
        masks.append(json.dumps(rgdata.find_masks(rg, stem) if rg else {}))
    return organs, masks


def _labels(stems: list[str], tables: _Tables, mapping: labelmap.LabelMapping,
            vocabulary: Sequence[str]) -> pd.DataFrame:
    """label:<name> columns for ``stems`` of one split: a volume missing from the labels CSV gets <NA>."""
    try:
        result = labelmap.apply(tables.labels.reindex(stems), mapping, vocabulary)
    except ValueError as err:
        raise BadDatasetError(tables.labels_path, str(err)) from None
    if result.unused_message():
        warnings.warn(f"{tables.labels_path}: {result.unused_message()}", stacklevel=3)
    return result.frame.reset_index(drop=True)


def _collect(root: Path, folders: dict[str, Path], mapping: labelmap.LabelMapping,
             vocabulary: Sequence[str]) -> tuple[pd.DataFrame, Skipped]:
    """Rows (report, metadata and label columns) of every usable volume, and the skipped list."""
    parts: list[pd.DataFrame] = []
    skipped: Skipped = []
    for split, folder in folders.items():
        tables = _read_tables(root / "dataset", split)
        files, ambiguous = _volume_files(folder, split, skipped)
        rows = []
        for stem in sorted((set(files) | set(tables.reports.index)) - ambiguous):
            try:
                rows.append(_row(stem, split, files, tables))
            except _SkipRow as reason:
                skipped.append((str(files.get(stem, stem)), str(reason)))
        labels = _labels([r["id"] for r in rows], tables, mapping, vocabulary)
        parts.append(pd.concat([pd.DataFrame(rows), labels], axis=1))
    frame = pd.concat(parts, ignore_index=True)
    if frame.empty:
        reasons = "; ".join(f"{n}: {r}" for n, r in skipped[:3])
        raise BadDatasetError(root, f"no usable volume ({len(skipped)} skipped{': ' + reasons if reasons else ''})")
    return frame, skipped


def build_manifest(root: str | Path, *, radgenome: str | Path | None = None, val_fraction: float = 0.1,
                   seed: int = 0, label_map=None, vocabulary: Sequence[str] = CTRATE_LABELS,
                   ) -> tuple[Manifest, Skipped]:
    """One manifest row per CT-RATE volume file, and the (name, reason) of everything left out.

    ``label_map``: a packaged mapping name, a YAML path or a LabelMapping (default ``ctrate``, the
    identity over the 18 labels). Bad rows are skipped and listed; a missing table or a root without
    ``dataset/`` raises BadDatasetError naming the path.
    """
    root = Path(root)
    rg = Path(radgenome) if radgenome is not None else None
    folders = _present_splits(root)
    mapping = labelmap.load_mapping(label_map, default="ctrate")
    regions = rgdata.read_region_sentences(rg, list(folders)) if rg else None
    frame, skipped = _collect(root, folders, mapping, vocabulary)
    frame["organ_sentences"], frame["masks"] = _grounding(frame, rg, regions)
    train = frame["split"] == "train"
    assign = split_by_patient(frame.loc[train, "patient_id"], {"valid": val_fraction}, seed)
    frame.loc[train, "split"] = frame.loc[train, "patient_id"].map(assign)
    return Manifest(frame), skipped
