"""A user's CSV or JSONL listing volumes -> Manifest.

Columns (CSV header, or JSONL keys with one JSON object per line):

================  ==============================================================================
path              required: NIfTI / DICOM folder / NRRD / MHA, relative to the file's folder (or
                  ``root``) or absolute
report            the whole report text, split into sections by the report parser; or the section
                  columns ``clinical``, ``technique``, ``findings``, ``impressions``
id                default: the file name without its suffix (a repeated id skips the later row)
patient_id        default: the id; ``scan_id`` / ``recon_id`` optional
split             ``train`` / ``valid`` / ``test`` (``val``, ``validation`` accepted); blank: by a
                  seeded hash of the patient with ``val_fraction`` / ``test_fraction``
label:<name>      a vocabulary label, 0/1/blank; other columns are mapped by ``label_map`` if given
mask:<name>       a mask path; or ``masks``: a JSON object {name: path}
================  ==============================================================================

A row whose volume or mask file is missing, whose report is not text, whose split is unknown, whose id
is not a plain file name, or whose label value is not 0/1/blank (2, -1, 0.5: the row, not the dataset)
is skipped and listed with the reason; so is a JSONL line that is not UTF-8 or not JSON. A CSV that is
not UTF-8 is refused, naming the line of its first bad byte. A row without report text is kept (its
labels and masks still train).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ctvlp.data.adapters import labelmap
from ctvlp.data.adapters.common import Skipped, read_table, split_by_patient, strip_nifti_suffix, text, utf8_error
from ctvlp.data.labels import CTRATE_LABELS
from ctvlp.data.manifest import LABEL_PREFIX, REPORT_SECTIONS, Manifest, unsafe_ids
from ctvlp.data.reports import organ_sentences, split_sections
from ctvlp.errors import BadDatasetError

MASK_PREFIX = "mask:"
RESERVED: frozenset[str] = frozenset({
    "path", "report", "id", "patient_id", "scan_id", "recon_id", "split", "masks", "source",
    "organ_sentences", "rescale_slope", "rescale_intercept", "spacing_hint", *REPORT_SECTIONS,
})
SPLIT_NAMES = {"train": "train", "valid": "valid", "val": "valid", "validation": "valid", "test": "test"}


class _SkipRow(Exception):
    """A row left out of the manifest; the message is the reason."""


def read_records(path: Path) -> list[dict | str]:
    """CSV rows or JSONL objects as dicts; an unparseable JSONL line becomes its error message."""
    if path.suffix.lower() not in (".jsonl", ".ndjson"):
        return read_table(path, ("path",)).to_dict("records")
    if not path.is_file():
        raise BadDatasetError(path, "file not found")
    records: list[dict | str] = []
    for number, raw in enumerate(path.read_bytes().splitlines(), start=1):
        try:
            line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as err:
            records.append(f"line {number}: {utf8_error(raw, err).rsplit(' at line', 1)[0]}")
            continue
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            records.append(f"line {number}: not JSON ({err.msg})")
            continue
        records.append(record if isinstance(record, dict) else f"line {number}: not a JSON object")
    if not any(isinstance(r, dict) and "path" in r for r in records):
        raise BadDatasetError(path, "no JSON object with a `path` key")
    return records


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value == ""


def _text_field(record: dict, key: str) -> str:
    value = record.get(key)
    if _blank(value):
        return ""
    if not isinstance(value, str):
        raise _SkipRow(f"{key} is not text (got {type(value).__name__})")
    return value.strip()


def _sections(record: dict) -> dict[str, str]:
    if "report" in record and not _blank(record["report"]):
        found = split_sections(_text_field(record, "report"))
        return {s: text(found.get(s)) for s in REPORT_SECTIONS}
    return {s: _text_field(record, s) for s in REPORT_SECTIONS}


def _resolve(value: object, base: Path, what: str) -> str:
    if _blank(value) or not isinstance(value, str):
        raise _SkipRow(f"{what} path is missing or not text")
    path = Path(value).expanduser()
    path = path if path.is_absolute() else base / path
    if not path.exists():
        raise _SkipRow(f"{what} file missing: {path}")
    return str(path.absolute())


def _masks(record: dict, base: Path) -> dict[str, str]:
    listed = record.get("masks")
    if isinstance(listed, str) and listed.strip():
        try:
            listed = json.loads(listed)
        except json.JSONDecodeError:
            raise _SkipRow("masks is not a JSON object") from None
    if not _blank(listed) and not isinstance(listed, dict):
        raise _SkipRow("masks is not a JSON object")
    masks = dict(listed or {})
    masks.update({k[len(MASK_PREFIX):]: v for k, v in record.items()
                  if k.startswith(MASK_PREFIX) and not _blank(v)})
    return {name: _resolve(path, base, f"mask {name!r}") for name, path in masks.items()}


def _row(record: dict, base: Path, source: str) -> dict:
    """The manifest row of one record (without labels); raises _SkipRow with the reason."""
    path = _resolve(record.get("path"), base, "volume")
    volume_id = text(record.get("id")) or strip_nifti_suffix(Path(path).name)
    if unsafe_ids([volume_id]):
        raise _SkipRow(f"id {volume_id!r} is not a plain file name (it names the volume's cache folder: no '/', "
                       f"'\\', leading '.')")
    split = _text_field(record, "split").lower()
    if split and split not in SPLIT_NAMES:
        raise _SkipRow(f"unknown split {split!r} (use train, valid or test)")
    patient = text(record.get("patient_id")) or volume_id
    return {
        "id": volume_id, "patient_id": patient, "scan_id": text(record.get("scan_id")) or volume_id,
        "recon_id": text(record.get("recon_id")) or volume_id, "split": SPLIT_NAMES.get(split, ""),
        "path": path, "source": source, **_sections(record), "masks": json.dumps(_masks(record, base)),
    }


def _assign_splits(rows: list[dict], val_fraction: float, test_fraction: float, seed: int) -> None:
    """Blank splits: the patient's explicit split if another row has one, else by patient hash."""
    explicit = {r["patient_id"]: r["split"] for r in rows if r["split"]}
    hashed = split_by_patient([r["patient_id"] for r in rows if r["patient_id"] not in explicit],
                              {"test": test_fraction, "valid": val_fraction}, seed)
    for row in rows:
        row["split"] = row["split"] or explicit.get(row["patient_id"]) or hashed[row["patient_id"]]


def _label_target(column: str, mapping: labelmap.LabelMapping | None) -> str | None:
    """The vocabulary label a record's column feeds (``label:<name>``, or through the mapping), or None."""
    if column.startswith(LABEL_PREFIX):
        return column[len(LABEL_PREFIX):]
    return mapping.columns.get(column) if mapping else None


def _check_labels(record: dict, mapping: labelmap.LabelMapping | None, vocabulary: Sequence[str]) -> None:
    """_SkipRow naming the record's label columns whose value is not 0/1/blank (2, -1, 0.5, "maybe"): a
    hand-made table's typo costs its row, listed, not the whole dataset."""
    wrong = [f"{k}={v!r}" for k, v in record.items()
             if _label_target(str(k), mapping) in vocabulary and not labelmap.is_binary(v)]
    if wrong:
        raise _SkipRow(f"label value(s) other than 0/1/yes/no/true/false/blank: {', '.join(wrong)}")


def _labels(records: list[dict], path: Path, mapping: labelmap.LabelMapping | None,
            vocabulary: Sequence[str]) -> pd.DataFrame:
    """label:<name> columns: ``label:`` columns as they are, other columns through ``mapping``."""
    frame = pd.DataFrame.from_records(records).drop(columns=RESERVED, errors="ignore")
    frame = frame.loc[:, [c for c in frame.columns if not str(c).startswith(MASK_PREFIX)]]
    columns = dict(mapping.columns) if mapping else {}
    columns.update({c: c[len(LABEL_PREFIX):] for c in frame.columns if str(c).startswith(LABEL_PREFIX)})
    name = mapping.name if mapping else "label: columns"
    try:
        result = labelmap.apply(frame, labelmap.LabelMapping(name, columns), vocabulary)
    except ValueError as err:
        raise BadDatasetError(path, str(err)) from None
    if result.unused_message():
        warnings.warn(f"{path}: {result.unused_message()}", stacklevel=3)
    return result.frame.reset_index(drop=True)


def build_manifest(csv_or_jsonl: str | Path, *, root: str | Path | None = None, label_map=None,
                   vocabulary: Sequence[str] = CTRATE_LABELS, val_fraction: float = 0.1,
                   test_fraction: float = 0.1, seed: int = 0, source: str = "generic",
                   ) -> tuple[Manifest, Skipped]:
    """One manifest row per usable record, and the (name, reason) of every record left out."""
    path = Path(csv_or_jsonl)
    base = Path(root) if root is not None else path.parent
    mapping = labelmap.load_mapping(label_map) if label_map is not None else None
    rows, kept, skipped, seen = [], [], [], set()
    for number, record in enumerate(read_records(path), start=1):
        name = text(record.get("path")) if isinstance(record, dict) else f"line {number}"
        try:
            if not isinstance(record, dict):
                raise _SkipRow(record)
            _check_labels(record, mapping, vocabulary)
            row = _row(record, base, source)
            if row["id"] in seen:
                raise _SkipRow(f"duplicate id {row['id']!r} (give each row an `id`)")
        except _SkipRow as reason:
            skipped.append((name or f"row {number}", str(reason)))
            continue
        seen.add(row["id"])
        rows.append(row)
        kept.append(record)
    if not rows:
        raise BadDatasetError(path, f"no usable row ({len(skipped)} skipped; first: {skipped[:1]})")
    _assign_splits(rows, val_fraction, test_fraction, seed)
    _add_organ_sentences(rows)
    frame = pd.concat([pd.DataFrame(rows), _labels(kept, path, mapping, vocabulary)], axis=1)
    return Manifest(frame), skipped


def _add_organ_sentences(rows: list[dict]) -> None:
    for row in rows:
        row["organ_sentences"] = json.dumps(organ_sentences(row["findings"]))
