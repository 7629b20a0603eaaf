"""Label harmonisation: one YAML mapping file per dataset puts its label columns onto one vocabulary.

A mapping file (packaged ones live in ``ctvlp/data/resources/label_mappings/``)::

    dataset: rad-chestct
    columns:                        # source column -> vocabulary label
      nodule: Lung nodule
      groundglass: Lung opacity     # several columns may feed one label (positive if any is)
      NoteAcc_DEID: null            # known column that is not a label: ignored quietly

A vocabulary label that no column of the dataset maps to becomes ``<NA>`` (availability 0), never 0:
a missing label must contribute nothing to a loss or a metric. Source columns the mapping does not
mention are reported, not guessed at.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import pandas as pd
import yaml

from ctvlp.data.labels import CTRATE_LABELS
from ctvlp.data.manifest import LABEL_PREFIX, Manifest
from ctvlp.errors import BadDatasetError

_TRUE = {"1", "1.0", "true", "yes", "y", "t"}
_FALSE = {"0", "0.0", "false", "no", "n", "f"}
_BLANK = {"", "nan", "<na>"}


@dataclass(frozen=True)
class LabelMapping:
    """Source label columns of one dataset -> vocabulary labels."""

    name: str
    """Dataset name, for messages."""
    columns: dict[str, str | None]
    """Source column -> vocabulary label; None for a known column that is not a label."""


@dataclass
class HarmonisedLabels:
    """The result of :func:`apply`."""

    frame: pd.DataFrame
    """One nullable Int8 column ``label:<name>`` per vocabulary label, same index as the input."""
    unknown_columns: list[str] = field(default_factory=list)
    """Source columns the mapping does not mention (ignored)."""
    unknown_targets: list[str] = field(default_factory=list)
    """Mapping targets that are not in the vocabulary (ignored)."""
    available: list[str] = field(default_factory=list)
    """Vocabulary labels this dataset provides (the others are all <NA>)."""

    def unused_message(self) -> str | None:
        """One line naming what was ignored, or None when everything was used."""
        parts = []
        if self.unknown_columns:
            parts.append(f"columns not in the label mapping (ignored): {self.unknown_columns}")
        if self.unknown_targets:
            parts.append(f"mapped labels not in the vocabulary (ignored): {sorted(set(self.unknown_targets))}")
        return "; ".join(parts) or None


def packaged_mappings() -> list[str]:
    """Names of the mapping files shipped with ctvlp (``ctrate``, ``rad_chestct``, ...)."""
    folder = resources.files("ctvlp.data") / "resources" / "label_mappings"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_mapping(spec: str | Path | LabelMapping | None, default: str = "ctrate") -> LabelMapping:
    """A mapping from a packaged name, a YAML path, an existing mapping, or None (``default``)."""
    if isinstance(spec, LabelMapping):
        return spec
    spec = default if spec is None else spec
    path = Path(spec)
    if not path.is_file():
        if str(spec) not in packaged_mappings():
            raise BadDatasetError(spec, f"no such label mapping file; packaged ones: {packaged_mappings()}")
        path = Path(str(resources.files("ctvlp.data") / "resources" / "label_mappings" / f"{spec}.yaml"))
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise BadDatasetError(path, f"not valid YAML ({err})") from None
    columns = data.get("columns") if isinstance(data, dict) else None
    if not isinstance(columns, dict) or not all(
            isinstance(v, str) or v is None for v in columns.values()):
        raise BadDatasetError(path, "a label mapping needs `columns:` mapping source names to labels or null")
    return LabelMapping(name=str(data.get("dataset", path.stem)), columns={str(k): v for k, v in columns.items()})


def _label_text(value: object) -> str:
    return "" if value is None or (isinstance(value, float) and value != value) else str(value).strip().lower()


def is_binary(value: object) -> bool:
    """Whether :func:`to_binary` takes ``value``: 0/1, true/false, yes/no (any case) or blank."""
    return _label_text(value) in _TRUE | _FALSE | _BLANK


def to_binary(values: pd.Series, column: str) -> pd.Series:
    """0/1, true/false, yes/no (any case), blank -> <NA>; anything else (2, -1, 0.5, a probability) raises
    ValueError naming the column, the values and the rows (the index labels) that hold them."""
    as_text = values.map(_label_text)
    wrong = ~as_text.isin(_TRUE | _FALSE | _BLANK)
    if wrong.any():
        rows = [str(r) for r in values.index[wrong]]
        raise ValueError(f"label column {column!r} has values other than 0/1/blank: "
                         f"{sorted(set(values[wrong].astype(str)))[:5]} in {len(rows)} row(s): "
                         f"{rows[:5]}{' ...' if len(rows) > 5 else ''}")
    out = pd.Series(pd.NA, index=values.index, dtype="Int8")
    out[as_text.isin(_TRUE)] = 1
    out[as_text.isin(_FALSE)] = 0
    return out


def apply(df: pd.DataFrame, mapping: LabelMapping, vocabulary: Sequence[str] = CTRATE_LABELS,
          ) -> HarmonisedLabels:
    """Map the label columns of ``df`` onto ``vocabulary`` (raises ValueError on non-0/1 values)."""
    known = set(vocabulary)
    sources: dict[str, list[str]] = {}
    result = HarmonisedLabels(frame=pd.DataFrame(index=df.index))
    for column in df.columns:
        if column not in mapping.columns:
            result.unknown_columns.append(str(column))
        elif mapping.columns[column] is not None and mapping.columns[column] not in known:
            result.unknown_targets.append(str(mapping.columns[column]))
        elif mapping.columns[column] is not None:
            sources.setdefault(mapping.columns[column], []).append(column)
    for label in vocabulary:
        if label in sources:
            block = pd.concat([to_binary(df[c], c) for c in sources[label]], axis=1)  # (N, n_sources)
            column = block.max(axis=1, skipna=True).astype("Int8")  # any 1 -> 1; all <NA> -> <NA>
        else:
            column = pd.Series(pd.NA, index=df.index, dtype="Int8")
        result.frame[LABEL_PREFIX + label] = column
    result.available = [label for label in vocabulary if label in sources]
    return result


def merge(manifests: Sequence[Manifest]) -> Manifest:
    """One manifest from several: rows concatenated, label columns united (absent -> <NA>).

    Label columns keep the order in which they first appear. Raises ValueError on duplicate ids.
    """
    frames = [m.df for m in manifests]
    labels: list[str] = []
    for frame in frames:
        labels += [c for c in frame.columns if c.startswith(LABEL_PREFIX) and c not in labels]
    widened = [f.reindex(columns=[*[c for c in f.columns if not c.startswith(LABEL_PREFIX)], *labels])
               for f in frames]
    for frame in widened:
        for column in labels:
            frame[column] = frame[column].astype("Int8")
    return Manifest(pd.concat(widened, ignore_index=True))
