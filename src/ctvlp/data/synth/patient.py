"""One synthetic patient: anatomy, scans, reconstructions, their files and their table rows.

:func:`make_patient` runs in a worker process: it draws everything of one patient from the patient's
own seed, renders each reconstruction at its final grid, writes the volume and its masks, and
returns the rows the parent puts in the CSVs.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from ctvlp.data.labels import CTRATE_LABELS
from ctvlp.data.synth.findings import DIFFICULTIES, RENDERED, sample_findings
from ctvlp.data.synth.geometry import GridSpec, Pose
from ctvlp.data.synth.phantom import Anatomy, sample_anatomy
from ctvlp.data.synth.render import Rendered, ReconSpec, ScanSpec, render
from ctvlp.data.synth.reports import Report, write_report
from ctvlp.fsutil import atomic_write_bytes

Z_SPACINGS = ((1.0, 1.25, 1.5, 2.0, 3.0, 5.0), (0.3, 0.15, 0.2, 0.15, 0.1, 0.1))
MANUFACTURERS = ("SIEMENS", "PHILIPS", "GE MEDICAL SYSTEMS", "TOSHIBA")
SCAN_LETTERS = "abcdefghij"


@dataclass(frozen=True)
class PatientPlan:
    """What the parent decided about one patient."""

    split: str
    """CT-RATE split: ``train`` or ``valid``."""
    number: int
    """Patient number within the split (1-based)."""
    index: int
    """Patient index in the cohort: with the cohort seed, the patient's own seed."""
    recons: tuple[int, ...]
    """Number of reconstructions of each scan."""
    raw: tuple[bool, ...]
    """Per volume (scan-major): stored as HU + 1024."""


@dataclass
class VolumeRows:
    """The table rows of one volume."""

    split: str
    raw: bool
    report: dict
    labels: dict
    metadata: dict
    regions: list[dict] = field(default_factory=list)


def _scan(rng: np.random.Generator, anatomy: Anatomy, matrix: int, prevalence: dict[str, float],
          difficulty) -> tuple[ScanSpec, float, list[str]]:
    """Pose, contrast, table and findings of one scan, its in-plane spacing and present labels."""
    xy = round(float(rng.uniform(0.6, 1.0)), 3)
    half_fov = matrix * xy / 2
    pose = Pose(unit_mm=float(rng.uniform(0.8, 0.9)) * half_fov,
                shift_mm=tuple(float(v) for v in rng.uniform(-0.04, 0.04, 2) * half_fov),
                angle_deg=float(rng.uniform(-4, 4)),
                c_range=(float(rng.uniform(-1.0, -0.88)), float(rng.uniform(0.95, 1.1))))
    present = [label for label in RENDERED if rng.random() < prevalence[label]]
    findings = sample_findings(rng, anatomy, present, difficulty, pose.unit_mm)
    return ScanSpec(pose, bool(rng.random() < 0.3), bool(rng.random() < 0.75), tuple(findings)), xy, present


def _recons(rng: np.random.Generator, count: int, matrix: int, xy: float) -> list[tuple[GridSpec, str, float]]:
    """Grid, kernel and noise of each reconstruction (distinct slice spacings)."""
    z_choices = rng.choice(len(Z_SPACINGS[0]), size=count, replace=False, p=Z_SPACINGS[1])
    out = []
    for i, zi in enumerate(z_choices):
        z = Z_SPACINGS[0][int(zi)]
        kernel = "soft" if i == 0 else str(rng.choice(["soft", "sharp"]))
        noise = rng.uniform(18, 30) if kernel == "soft" else rng.uniform(25, 45)
        out.append((GridSpec(matrix, xy, z), kernel, float(noise * np.sqrt(1.5 / z))))
    return out


def make_patient(job: tuple) -> list[VolumeRows]:
    """Render and write every volume of one patient; returns their table rows (scan-major order)."""
    plan, cfg, prevalence = job
    difficulty = DIFFICULTIES[cfg.difficulty]
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, plan.index]))
    anatomy = sample_anatomy(rng)
    rows, volume = [], 0
    for s, n_recons in enumerate(plan.recons):
        scan, xy, present = _scan(rng, anatomy, cfg.matrix, prevalence, difficulty)
        manufacturer = str(rng.choice(MANUFACTURERS))
        report: Report | None = None
        for r, (grid, kernel, noise) in enumerate(_recons(rng, n_recons, cfg.matrix, xy)):
            stem = f"{plan.split}_{plan.number}_{SCAN_LETTERS[s]}_{r + 1}"
            recon = ReconSpec(grid, kernel, noise, plan.raw[volume], int(rng.integers(2**31)))
            rendered = render(anatomy, scan, recon, difficulty)
            if report is None:
                report = write_report(rng, list(scan.findings), scan.pose.unit_mm, scan.contrast, grid.z_mm,
                                      bool(rendered.regions["thyroid"].any()))
            write_volume(Path(cfg.out), plan.split, stem, rendered)
            rows.append(_rows(plan, stem, recon, rendered, report, present, anatomy, manufacturer))
            volume += 1
    return rows


def _rows(plan: PatientPlan, stem: str, recon: ReconSpec, rendered: Rendered, report: Report,
          present: list[str], anatomy: Anatomy, manufacturer: str) -> VolumeRows:
    name = f"{stem}.nii.gz"
    grid = recon.grid
    metadata = {"VolumeName": name, "Manufacturer": manufacturer, "PatientSex": anatomy.sex,
                "PatientAge": f"{anatomy.age:03d}Y", "SliceThickness": f"{grid.z_mm:g}",
                "XYSpacing": f"[{grid.xy_mm:g}, {grid.xy_mm:g}]", "ZSpacing": f"{grid.z_mm:g}",
                "Rows": grid.matrix, "Columns": grid.matrix, "NumberofSlices": rendered.stored.shape[0],
                "RescaleIntercept": -1024, "RescaleSlope": 1, "RescaleType": "HU", "PatientPosition": "HFS"}
    return VolumeRows(
        split=plan.split, raw=recon.raw,
        report={"VolumeName": name, "ClinicalInformation_EN": report.clinical, "Technique_EN": report.technique,
                "Findings_EN": report.findings, "Impressions_EN": report.impressions},
        labels={"VolumeName": name, **{label: int(label in present) for label in CTRATE_LABELS}},
        metadata=metadata,
        regions=[{"Volumename": name, "Anatomy": region, "Sentence": sentence} for region, sentence in report.regions])


def nifti_header(shape_zyx: tuple[int, ...], dtype, affine: np.ndarray) -> bytes:
    """NIfTI-1 single-file header (+ empty extension flag) for an (X, Y, Z) array of ``dtype``."""
    header = nib.Nifti1Header()
    header.set_data_shape(tuple(reversed(shape_zyx)))  # (X, Y, Z) on disk
    header.set_data_dtype(dtype)
    header.set_qform(affine, code=1)
    header.set_sform(affine, code=1)
    header.set_xyzt_units("mm")
    header["vox_offset"] = 352
    return header.binaryblock + b"\x00" * 4


def save_nifti(path: Path, header: bytes, array_zyx: np.ndarray) -> None:
    """gzip level 1, zero time stamp (same input, same bytes). The (X, Y, Z) Fortran-order data the
    file holds are exactly the C-order bytes of the (Z, Y, X) array, so no transpose copy is made. Written
    atomically (a killed run leaves no half file) without fsync: a rerun of synth rewrites every file, and
    the fsyncs cost ~9 % of synth's time (1.2 of 13.6 s for 100 volumes)."""
    packer = zlib.compressobj(1, zlib.DEFLATED, 31)  # wbits 31: gzip container
    data = packer.compress(header) + packer.compress(np.ascontiguousarray(array_zyx)) + packer.flush()
    atomic_write_bytes(path, data, durable=False)


def write_volume(out: Path, split: str, stem: str, rendered: Rendered) -> None:
    """The volume in the CT-RATE tree and its non-empty masks under radgenome/masks/seg_{stem}/."""
    patient, scan = stem.rsplit("_", 2)[0], stem.rsplit("_", 1)[0]
    folder = out / "dataset" / split / patient / scan
    folder.mkdir(parents=True, exist_ok=True)
    shape = rendered.stored.shape
    save_nifti(folder / f"{stem}.nii.gz", nifti_header(shape, np.int16, rendered.affine), rendered.stored)
    masks = out / "radgenome" / "masks" / f"seg_{stem}"
    masks.mkdir(parents=True, exist_ok=True)
    header = nifti_header(shape, np.uint8, rendered.affine)
    for name, mask in {**rendered.regions, **rendered.findings}.items():
        if mask.any():
            save_nifti(masks / f"{name}.nii.gz", header, mask.view(np.uint8))
