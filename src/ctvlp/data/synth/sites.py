"""A second "site" for the synthetic cohort: its labels under another dataset's names, some missing.

``ctvlp synth --out B --site rad_chestct`` writes the cohort as usual (CT-RATE layout) and then
``B/rad_chestct.csv``: one row per volume in the layout of the *generic* adapter (``path``, ids,
split, report sections, ``masks``) whose label columns are RAD-ChestCT's (``nodule``,
``pleural_effusion``, ``groundglass``, ``catheter_or_port``, ...), i.e. the columns of the packaged
mapping file ``label_mappings/rad_chestct.yaml``. So the second site is read by the existing code::

    ctvlp manifest generic B/rad_chestct.csv --label-map rad_chestct --source rad-chestct --out b.parquet

and, merged with a CT-RATE-layout cohort, gives one manifest on CT-RATE's vocabulary in which the
labels RAD-ChestCT does not have (Mosaic attenuation pattern, Arterial and Coronary artery wall
calcification: its ``calcification`` column has no location, so the mapping ignores it) are <NA>.

The site table is derived from what the CT-RATE adapter reads from the cohort (ids, splits, report
sections, RadGenome masks, the 18 ground-truth labels), so it cannot drift from the cohort. The
cohort's own CT-RATE tables stay in ``B/dataset/`` as the synthesiser's ground truth; they are not
part of site B's data. Ids and patient ids are prefixed with the site name (``rad_chestct_train_1_a_1``)
so that they never collide with a CT-RATE-layout cohort's ids in a merge.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from ctvlp.data.adapters import labelmap
from ctvlp.data.adapters.ctrate import build_manifest
from ctvlp.data.manifest import LABEL_PREFIX, save_table

SECTIONS = ("clinical", "technique", "findings", "impressions")

# Columns whose value is not a plain copy of the one label the mapping file sends them to (or that the
# mapping file marks null). Each takes the ground truth (label -> 0/1 Series) and the report text.
Rule = Callable[[dict[str, pd.Series], pd.Series], pd.Series]


def _pacemaker(text: pd.Series) -> pd.Series:
    """The synthesiser's medical material is a pacemaker or a venous port; its report names which."""
    return text.str.lower().str.contains("pacemaker").astype(int)


RAD_CHESTCT_RULES: dict[str, Rule] = {
    "pacemaker_or_defib": lambda t, text: t["Medical material"] * _pacemaker(text),
    "catheter_or_port": lambda t, text: t["Medical material"] * (1 - _pacemaker(text)),
    "stent": lambda t, text: 0 * t["Medical material"],  # never drawn
    "calcification": lambda t, text: t["Arterial wall calcification"] | t["Coronary artery wall calcification"],
    "mass": lambda t, text: 0 * t["Lung nodule"],  # nodules are < 3 cm
}
SITES: dict[str, dict[str, Rule]] = {"rad_chestct": RAD_CHESTCT_RULES}
"""Site name (= packaged mapping file) -> its special column rules."""


def site_labels(truth: pd.DataFrame, text: pd.Series, site: str = "rad_chestct") -> pd.DataFrame:
    """The site's label columns from the ground truth (columns = CT-RATE label names, 0/1).

    Every column of the site's mapping file is written in the file's order: a column mapped to a label
    copies it, a column with a rule in :data:`SITES` follows the rule, other null-mapped columns
    (e.g. ``NoteAcc_DEID``) are left out.
    """
    mapping = labelmap.load_mapping(site)
    rules = SITES[site]
    columns = {label: truth[label].astype(int) for label in truth.columns}
    out = pd.DataFrame(index=truth.index)
    for column, target in mapping.columns.items():
        if column in rules:
            out[column] = rules[column](columns, text).astype(int)
        elif target is not None:
            out[column] = columns[target]
    return out


def _relative(path: str, base: Path) -> str:
    return str(Path(path).relative_to(base))


def write_site_table(out: str | Path, site: str = "rad_chestct", val_fraction: float = 0.1,
                     seed: int = 0) -> Path:
    """Write ``OUT/<site>.csv`` for the cohort in ``OUT`` (see the module docstring); returns its path.

    Splits are the CT-RATE adapter's (the cohort's ``valid`` becomes ``test``; ``val_fraction`` of the
    train patients, by a ``seed``-ed hash, become ``valid``) and are written explicitly.
    """
    if site not in SITES:
        raise ValueError(f"unknown site {site!r}; known: {sorted(SITES)}")
    out = Path(out).absolute()
    written = out / "synth.json"
    if written.is_file() and json.loads(written.read_text()).get("raw_volumes", 0):
        raise ValueError(f"{out} has volumes stored as HU + 1024; the generic adapter reads volumes as "
                         "stored (no CT-RATE rescale fix), so a second site needs --raw-fraction 0")
    manifest, _ = build_manifest(out, radgenome=out / "radgenome", val_fraction=val_fraction, seed=seed)
    df = manifest.df
    truth = pd.DataFrame({c[len(LABEL_PREFIX):]: df[c] for c in df.columns if c.startswith(LABEL_PREFIX)})
    if truth.isna().any().any():
        raise ValueError(f"{out}: the cohort's labels CSV misses some labels; not a `ctvlp synth` cohort?")
    prefix = f"{site}_"
    table = pd.DataFrame({
        "path": [_relative(p, out) for p in df["path"]],
        "id": prefix + df["id"], "patient_id": prefix + df["patient_id"],
        "scan_id": prefix + df["scan_id"], "recon_id": prefix + df["recon_id"], "split": df["split"],
        **{s: df[s] for s in SECTIONS},
        "masks": [json.dumps({k: _relative(v, out) for k, v in json.loads(m).items()}) for m in df["masks"]],
    })
    table = pd.concat([table, site_labels(truth, df["findings"] + " " + df["impressions"], site)], axis=1)
    path = out / f"{site}.csv"
    return save_table(table, path)
