"""What the adapters share: reading a dataset table, patient-grouped splits, the skipped list."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from ctvlp.errors import BadDatasetError

Skipped = list[tuple[str, str]]
"""(name, reason) of every row or file an adapter left out; written beside the manifest."""

NIFTI_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii")


def utf8_error(raw: bytes, err: UnicodeDecodeError) -> str:
    """Where ``raw`` stops being UTF-8, in words: the byte and its line."""
    line = raw.count(b"\n", 0, err.start) + 1
    return f"not UTF-8 text: byte 0x{raw[err.start]:02x} at line {line}"


def read_table(path: Path, required: Sequence[str] = ()) -> pd.DataFrame:
    """A UTF-8 CSV as strings (empty cells -> NaN), checked for ``required`` columns. A file in another
    encoding is refused with the line of its first non-UTF-8 byte rather than decoded by a guess (a
    latin-1 guess turns another encoding's text into wrong characters without a word)."""
    if not path.is_file():
        raise BadDatasetError(path, "file not found")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise BadDatasetError(path, f"{utf8_error(raw, err)}; save it as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)"
                              ) from None
    try:
        df = pd.read_csv(io.StringIO(text), dtype=str)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise BadDatasetError(path, f"cannot read CSV ({type(err).__name__}: {' '.join(str(err).split())})") from None
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise BadDatasetError(path, f"lacks column(s) {missing}; it has {list(df.columns)[:12]}")
    return df


def text(value: object) -> str:
    """A report cell as text: NaN / None -> ""."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return str(value).strip()


def strip_nifti_suffix(name: str) -> str:
    """``train_1_a_1.nii.gz`` -> ``train_1_a_1`` (other suffixes: Path.stem)."""
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def _rank_key(patient: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{patient}".encode()).hexdigest()


def split_by_patient(patients: Iterable[str], held_out: dict[str, float], seed: int) -> dict[str, str]:
    """Assign every patient to one split, deterministically.

    Patients are ranked by a seeded hash of their id; the first ``round(f * n)`` of the ranking go to
    the first held-out split, the next ones to the second, and so on; the rest are ``train``. A
    positive fraction always gets at least one patient when there are two or more, and ``train``
    keeps at least one. The ranking of a patient does not depend on the others, so adding data
    moves few patients between splits.
    """
    ranked = sorted(set(patients), key=lambda p: _rank_key(p, seed))
    n = len(ranked)
    out: dict[str, str] = {}
    start = 0
    for name, fraction in held_out.items():
        if not 0.0 <= fraction < 1.0:
            raise ValueError(f"{name} fraction must be in [0, 1), got {fraction}")
        count = round(fraction * n)
        if fraction > 0 and count == 0 and n >= 2:
            count = 1
        count = max(0, min(count, n - 1 - start))
        out.update({p: name for p in ranked[start:start + count]})
        start += count
    out.update({p: "train" for p in ranked[start:]})
    return out
