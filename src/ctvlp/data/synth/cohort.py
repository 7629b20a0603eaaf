"""The synthetic cohort in CT-RATE's layout (plus RadGenome-ChestCT region reports and masks).

::

    OUT/dataset/{train,valid}/{split}_{p}/{split}_{p}_{s}/{split}_{p}_{s}_{r}.nii.gz   int16, LPS
    OUT/dataset/radiology_text_reports/{train,validation}_reports.csv
    OUT/dataset/multi_abnormality_labels/{train,valid}_predicted_labels.csv
    OUT/dataset/metadata/{train,validation}_metadata.csv
    OUT/radgenome/{train,valid}_region_report.csv
    OUT/radgenome/masks/seg_{stem}/{region or label slug}.nii.gz                     uint8, same grid
    OUT/synth.json                                                                  config + prevalences

The parent process draws everything cohort-wide (patients, scans and reconstructions per patient,
split, which volumes are stored raw, label prevalences); each patient is then made from its own seed
(``SeedSequence([seed, patient index])``), so the files do not depend on ``workers``.

Every file is written atomically (:mod:`ctvlp.fsutil`) and the same seed gives the same bytes, so a
killed run leaves only whole files and running the command again makes the same cohort; ``synth.json``
is written last.
"""

from __future__ import annotations

import json
import multiprocessing
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ctvlp.data.labels import CTRATE_LABELS
from ctvlp.data.manifest import save_table
from ctvlp.data.synth.findings import DIFFICULTIES, RENDERED
from ctvlp.data.synth.patient import PatientPlan, VolumeRows, make_patient
from ctvlp.fsutil import atomic_write_text

SPLIT_FILES = {  # CT-RATE split -> (reports, labels, metadata, RadGenome) file names
    "train": ("train_reports.csv", "train_predicted_labels.csv", "train_metadata.csv", "train_region_report.csv"),
    "valid": ("validation_reports.csv", "valid_predicted_labels.csv", "validation_metadata.csv",
              "valid_region_report.csv"),
}
REPORT_COLUMNS = ("VolumeName", "ClinicalInformation_EN", "Technique_EN", "Findings_EN", "Impressions_EN")
METADATA_COLUMNS = ("VolumeName", "Manufacturer", "PatientSex", "PatientAge", "SliceThickness", "XYSpacing",
                    "ZSpacing", "Rows", "Columns", "NumberofSlices", "RescaleIntercept", "RescaleSlope",
                    "RescaleType", "PatientPosition")
REGION_COLUMNS = ("Volumename", "Anatomy", "Sentence")
SCANS_PER_PATIENT = ((1, 2, 3), (0.8, 0.15, 0.05))
RECONS_PER_SCAN = ((1, 2, 3), (0.45, 0.45, 0.10))


@dataclass(frozen=True)
class SynthConfig:
    """What `ctvlp synth` makes."""

    out: str
    """Output folder (dataset/ and radgenome/ go inside)."""
    n: int
    """Number of volumes (reconstructions)."""
    seed: int = 0
    """Same seed, same files."""
    difficulty: str = "easy"
    """easy / medium / hard: lesion size and contrast (see findings.DIFFICULTIES)."""
    workers: int = 1
    """Processes that render patients in parallel."""
    val_fraction: float = 0.2
    """Share of patients written to CT-RATE's ``valid`` split."""
    matrix: int = 128
    """Rows = columns of every slice."""
    raw_fraction: float = 0.2
    """Share of volumes stored as HU + 1024 (metadata says intercept -1024 for all)."""

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.difficulty not in DIFFICULTIES:
            raise ValueError(f"difficulty must be one of {sorted(DIFFICULTIES)}, got {self.difficulty!r}")
        if not 0.0 <= self.val_fraction < 1.0 or not 0.0 <= self.raw_fraction <= 1.0:
            raise ValueError("val_fraction must be in [0, 1) and raw_fraction in [0, 1]")
        if not 32 <= self.matrix <= 512:
            raise ValueError(f"matrix must be in [32, 512], got {self.matrix}")


def plan_cohort(cfg: SynthConfig) -> tuple[list[PatientPlan], dict[str, float]]:
    """Patients (split, number, scans and reconstructions, raw flags) and the label prevalences."""
    rng = np.random.default_rng(cfg.seed)
    prevalence = {label: round(float(rng.uniform(0.1, 0.5)), 3) for label in RENDERED}
    layouts: list[tuple[int, ...]] = []
    total = 0
    while total < cfg.n:
        scans = int(rng.choice(SCANS_PER_PATIENT[0], p=SCANS_PER_PATIENT[1]))
        recons = [int(rng.choice(RECONS_PER_SCAN[0], p=RECONS_PER_SCAN[1])) for _ in range(scans)]
        while total + sum(recons) > cfg.n:  # trim the last patient to hit n exactly
            recons[-1] -= 1
            recons = [r for r in recons if r > 0]
        layouts.append(tuple(recons))
        total += sum(recons)
    n_valid = int(round(cfg.val_fraction * len(layouts))) if len(layouts) > 1 else 0
    valid = set(rng.permutation(len(layouts))[:n_valid].tolist())
    raw = np.zeros(cfg.n, dtype=bool)
    raw[rng.permutation(cfg.n)[: int(round(cfg.raw_fraction * cfg.n))]] = True
    plans, counters, start = [], {"train": 0, "valid": 0}, 0
    for index, recons in enumerate(layouts):
        split = "valid" if index in valid else "train"
        counters[split] += 1
        flags = tuple(bool(f) for f in raw[start:start + sum(recons)])
        plans.append(PatientPlan(split, counters[split], index, recons, flags))
        start += sum(recons)
    return plans, prevalence


def write_cohort(cfg: SynthConfig, progress=None) -> dict:
    """Make every patient (in ``cfg.workers`` processes) and write the tables; returns a summary."""
    plans, prevalence = plan_cohort(cfg)
    out = Path(cfg.out)
    (out / "dataset").mkdir(parents=True, exist_ok=True)
    jobs = [(plan, cfg, prevalence) for plan in plans]
    rows: list[VolumeRows] = []
    if cfg.workers <= 1:
        results = map(make_patient, jobs)
        for result in results:
            rows += result
            _tick(progress, len(result))
    else:
        with multiprocessing.get_context("fork").Pool(cfg.workers) as pool:
            for result in pool.imap(make_patient, jobs, chunksize=max(1, min(8, len(jobs) // (4 * cfg.workers)))):
                rows += result
                _tick(progress, len(result))
    _write_tables(out, rows)
    summary = {"config": asdict(cfg), "prevalence": prevalence, "volumes": len(rows),
               "patients": len(plans), "scans": sum(len(p.recons) for p in plans),
               "raw_volumes": int(sum(r.raw for r in rows)),
               "splits": {s: sum(r.split == s for r in rows) for s in ("train", "valid")},
               "rendered_labels": list(RENDERED)}
    atomic_write_text(out / "synth.json", json.dumps(summary, indent=2) + "\n")
    return summary


def _tick(progress, count: int) -> None:
    if progress is not None:
        progress(count)


def _write_tables(out: Path, rows: list[VolumeRows]) -> None:
    folders = ("radiology_text_reports", "multi_abnormality_labels", "metadata")
    for folder in folders:
        (out / "dataset" / folder).mkdir(parents=True, exist_ok=True)
    (out / "radgenome").mkdir(parents=True, exist_ok=True)
    for split, (reports, labels, metadata, regions) in SPLIT_FILES.items():
        part = [r for r in rows if r.split == split]
        tables = (
            (out / "dataset" / folders[0] / reports, [r.report for r in part], REPORT_COLUMNS),
            (out / "dataset" / folders[1] / labels, [r.labels for r in part], ("VolumeName", *CTRATE_LABELS)),
            (out / "dataset" / folders[2] / metadata, [r.metadata for r in part], METADATA_COLUMNS),
            (out / "radgenome" / regions, [row for r in part for row in r.regions], REGION_COLUMNS),
        )
        for path, records, columns in tables:
            save_table(pd.DataFrame(records, columns=list(columns)), path)
