"""The manifest: one row per volume, the single currency between adapters and `prepare`.

Columns (all adapters write the same schema; see docs/architecture.md):

==================  ======  ===========================================================
id                  str     unique volume id (CT-RATE: the file stem, e.g. ``train_1_a_1``); a plain file
                            name (it names the volume's cache folder): :func:`unsafe_ids`
patient_id          str     patient (bootstrap resampling and splits group by it)
scan_id             str     scan within the patient
recon_id            str     reconstruction within the scan
split               str     ``train`` / ``valid`` / ``test``
path                str     absolute path of the NIfTI / DICOM folder / NRRD / MHA
source              str     dataset name (``ct-rate``, ``radgenome``, ``generic``, ...)
clinical            str     report section: clinical information ("" when absent)
technique           str     report section: technique
findings            str     report section: findings
impressions         str     report section: impressions
organ_sentences     str     JSON {organ: [sentence, ...]} (RadGenome regions or the parser)
masks               str     JSON {mask name: absolute path}
rescale_slope       float   dataset metadata rescale (NaN when none); see adapters
rescale_intercept   float
spacing_hint        str     JSON [sx, sy, sz] from dataset metadata, "" when none
label:<name>        Int8    one column per vocabulary label: 1, 0, or <NA> = not available
==================  ======  ===========================================================

A label a dataset does not annotate is <NA> (availability 0), never 0.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ctvlp.errors import BadDatasetError
from ctvlp.fsutil import atomic_path

LABEL_PREFIX = "label:"
REPORT_SECTIONS: tuple[str, ...] = ("clinical", "technique", "findings", "impressions")
STR_COLUMNS: tuple[str, ...] = (
    "id", "patient_id", "scan_id", "recon_id", "split", "path", "source",
    *REPORT_SECTIONS, "organ_sentences", "masks", "spacing_hint",
)
FLOAT_COLUMNS: tuple[str, ...] = ("rescale_slope", "rescale_intercept")
DEFAULTS = {"organ_sentences": "{}", "masks": "{}", "spacing_hint": "", "source": "generic",
            "clinical": "", "technique": "", "findings": "", "impressions": ""}


def unsafe_ids(ids) -> list[str]:
    """The ids that are not plain file names: empty, ``.``/``..``, starting with ``.`` (the cache's temporary
    folders), or holding a path separator or a NUL. An id becomes the folder ``CACHE/volumes/<id>/``, so
    such an id could make `ctvlp prepare` write outside its cache."""
    return [str(v) for v in ids if not str(v) or str(v).startswith(".") or any(c in str(v) for c in "/\\\0")]


def label_names_of(columns) -> list[str]:
    """The label names of a manifest's or cache index's ``columns`` (those named ``label:<name>``), in order."""
    return [c[len(LABEL_PREFIX):] for c in columns if str(c).startswith(LABEL_PREFIX)]


def save_table(df: pd.DataFrame, path: str | Path) -> Path:
    """Write ``df`` as Parquet (``.parquet``) or CSV (anything else), atomically (:func:`ctvlp.fsutil.atomic_path`)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        if path.suffix == ".parquet":
            df.to_parquet(tmp, index=False)
        else:
            df.to_csv(tmp, index=False)
    return path


@dataclass
class Manifest:
    """A validated manifest table. ``df`` is a pandas DataFrame with the columns above."""

    df: pd.DataFrame

    def __post_init__(self) -> None:
        self.df = normalise(self.df)

    def __len__(self) -> int:
        return len(self.df)

    @property
    def label_names(self) -> list[str]:
        return label_names_of(self.df.columns)

    def labels(self) -> tuple[np.ndarray, np.ndarray]:
        """(N, K) float32 labels (0 where missing) and (N, K) bool availability."""
        cols = [LABEL_PREFIX + n for n in self.label_names]
        block = self.df[cols]
        available = block.notna().to_numpy()
        values = block.astype("Float32").fillna(0).to_numpy(dtype=np.float32)
        return values, available

    def split(self, name: str) -> "Manifest":
        return Manifest(self.df[self.df["split"] == name].reset_index(drop=True))

    def row(self, i: int) -> dict:
        return self.df.iloc[i].to_dict()

    @staticmethod
    def masks_of(row: dict) -> dict[str, str]:
        return json.loads(row.get("masks") or "{}")

    @staticmethod
    def organ_sentences_of(row: dict) -> dict[str, list[str]]:
        return json.loads(row.get("organ_sentences") or "{}")

    def save(self, path: str | Path) -> Path:
        """Write Parquet (``.parquet``) or CSV (anything else), atomically."""
        return save_table(self.df, path)

    @classmethod
    def load(cls, path: str | Path) -> "Manifest":
        path = Path(path)
        if not path.is_file():
            raise BadDatasetError(path, "manifest file not found")
        try:
            df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(
                path, dtype=str, keep_default_na=False)
        except Exception as err:  # pyarrow / pandas raise many types for corrupt files
            raise BadDatasetError(path, f"cannot read manifest ({type(err).__name__}: {err})") from None
        try:
            return cls(df)
        except ValueError as err:
            raise BadDatasetError(path, str(err)) from None


def normalise(df: pd.DataFrame) -> pd.DataFrame:
    """Fill defaults, coerce dtypes, check required columns and unique ids."""
    df = df.copy()
    for col, default in DEFAULTS.items():
        if col not in df.columns:
            df[col] = default
    for col in ("patient_id", "scan_id", "recon_id"):
        if col not in df.columns:
            df[col] = df["id"] if "id" in df.columns else ""
    missing = [c for c in ("id", "split", "path") if c not in df.columns]
    if missing:
        raise ValueError(f"manifest lacks required column(s) {missing}")
    for col in STR_COLUMNS:
        df[col] = df[col].fillna("").astype(str)
    for col in FLOAT_COLUMNS:
        df[col] = pd.to_numeric(df[col], errors="coerce") if col in df.columns else np.nan
    for col in [c for c in df.columns if c.startswith(LABEL_PREFIX)]:
        df[col] = pd.to_numeric(df[col].replace("", pd.NA), errors="coerce").astype("Int8")
    dup = df["id"][df["id"].duplicated()].tolist()
    if dup:
        raise ValueError(f"duplicate volume ids in manifest: {dup[:5]}")
    unsafe = unsafe_ids(df["id"])
    if unsafe:
        raise ValueError(f"{len(unsafe)} volume id(s) are not plain file names (no '/', '\\', leading '.'): "
                         f"{unsafe[:5]}")
    labels = [c for c in df.columns if c.startswith(LABEL_PREFIX)]
    return df[[*STR_COLUMNS, *FLOAT_COLUMNS, *labels]]
