"""The synthetic cohort: layout and tables as CT-RATE's, geometry, HU, masks, reports, determinism."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from ctvlp.cli import main
from ctvlp.data.adapters.fixes import decide_hu
from ctvlp.data.labels import CTRATE_LABELS
from ctvlp.data.synth.cohort import SynthConfig, plan_cohort, write_cohort
from ctvlp.data.synth.findings import DIFFICULTIES, RENDERED, sample_findings, slug
from ctvlp.data.synth.geometry import GridSpec, Pose
from ctvlp.data.synth.phantom import sample_anatomy
from ctvlp.data.synth.render import ReconSpec, ScanSpec, render
from ctvlp.data.synth.visibility import HOST_REGION as LABEL_HOST, lesions

HOST_REGION = {slug(label): region for label, region in LABEL_HOST.items()}

N = 14
REGIONS = {"lung", "trachea and bronchie", "heart", "mediastinum", "esophagus", "pleura", "bone", "thyroid",
           "abdomen", "aorta"}
UNIT_MM = 0.85 * 128 * 0.8 / 2
NAME = re.compile(r"^(train|valid)_(\d+)_([a-z])_(\d+)\.nii\.gz$")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    write_cohort(SynthConfig(out=str(out), n=N, seed=3, matrix=64))
    return out


def _tables(root: Path) -> dict[str, pd.DataFrame]:
    d = root / "dataset"
    return {
        "reports": pd.concat([pd.read_csv(d / "radiology_text_reports" / f) for f in
                              ("train_reports.csv", "validation_reports.csv")]),
        "labels": pd.concat([pd.read_csv(d / "multi_abnormality_labels" / f) for f in
                             ("train_predicted_labels.csv", "valid_predicted_labels.csv")]),
        "metadata": pd.concat([pd.read_csv(d / "metadata" / f) for f in
                               ("train_metadata.csv", "validation_metadata.csv")]),
        "regions": pd.concat([pd.read_csv(root / "radgenome" / f) for f in
                              ("train_region_report.csv", "valid_region_report.csv")]),
    }


def _volume_path(root: Path, name: str) -> Path:
    split, p, s, _ = NAME.match(name).groups()
    return root / "dataset" / split / f"{split}_{p}" / f"{split}_{p}_{s}" / name


def test_layout_and_columns_are_ct_rates(cohort):
    t = _tables(cohort)
    assert list(t["reports"].columns) == ["VolumeName", "ClinicalInformation_EN", "Technique_EN", "Findings_EN",
                                          "Impressions_EN"]
    assert list(t["labels"].columns) == ["VolumeName", *CTRATE_LABELS]
    assert list(t["metadata"].columns) == [
        "VolumeName", "Manufacturer", "PatientSex", "PatientAge", "SliceThickness", "XYSpacing", "ZSpacing", "Rows",
        "Columns", "NumberofSlices", "RescaleIntercept", "RescaleSlope", "RescaleType", "PatientPosition"]
    assert list(t["regions"].columns) == ["Volumename", "Anatomy", "Sentence"]
    names = list(t["reports"]["VolumeName"])
    assert len(names) == N and names == list(t["labels"]["VolumeName"]) == list(t["metadata"]["VolumeName"])
    assert all(NAME.match(n) for n in names)
    assert {n.split("_")[0] for n in names} == {"train", "valid"}
    assert all(_volume_path(cohort, n).is_file() for n in names)
    assert len(list((cohort / "dataset").rglob("*.nii.gz"))) == N
    assert set(t["regions"]["Volumename"]) == set(names)
    assert set(t["regions"]["Anatomy"]) <= REGIONS
    per_patient = pd.Series(names).str.extract(r"^(\w+?_\d+)_")[0].value_counts()
    assert per_patient.max() > 1  # some patients have several scans or reconstructions
    for n in names:
        files = {p.name for p in (cohort / "radgenome" / "masks" / f"seg_{n[:-7]}").glob("*.nii.gz")}
        assert {"lung.nii.gz", "heart.nii.gz", "aorta.nii.gz", "trachea and bronchie.nii.gz"} <= files


def test_geometry_matches_metadata_and_spacing_ranges(cohort):
    meta = _tables(cohort)["metadata"].set_index("VolumeName")
    counts = set()
    for name, row in meta.iterrows():
        img = nib.load(str(_volume_path(cohort, name)))
        assert "".join(nib.aff2axcodes(img.affine)) == "LPS"
        sx, sy, sz = (float(v) for v in img.header.get_zooms())
        xy = [float(v) for v in row["XYSpacing"].strip("[]").split(",")]
        assert sx == pytest.approx(xy[1], abs=1e-4) and sy == pytest.approx(xy[0], abs=1e-4)
        assert sz == pytest.approx(row["ZSpacing"], abs=1e-4) and 0.6 <= sx <= 1.0 and 1.0 <= sz <= 5.0
        assert img.shape == (row["Columns"], row["Rows"], row["NumberofSlices"])
        assert img.get_data_dtype() == np.int16
        assert (row["RescaleIntercept"], row["RescaleSlope"]) == (-1024, 1)
        counts.add(img.shape[2])
        mask = nib.load(str(cohort / "radgenome/masks" / f"seg_{name[:-7]}" / "lung.nii.gz"))
        assert mask.shape == img.shape and np.allclose(mask.affine, img.affine)
        assert mask.get_data_dtype() == np.uint8
    assert len(counts) > 3  # slice counts differ between volumes


def test_raw_fraction_is_detected_from_the_data(cohort):
    kinds = [decide_hu(np.asarray(nib.load(str(p)).dataobj), 1.0, -1024.0).kind
             for p in sorted((cohort / "dataset").rglob("*.nii.gz"))]
    assert kinds.count("rescaled") == round(0.2 * N) and kinds.count("hu") == N - round(0.2 * N)
    assert json.loads((cohort / "synth.json").read_text())["raw_volumes"] == round(0.2 * N)


def test_prevalence_and_unrendered_labels(cohort):
    summary = json.loads((cohort / "synth.json").read_text())
    assert set(summary["prevalence"]) == set(RENDERED) and len(RENDERED) >= 10
    assert all(0.1 <= p <= 0.5 for p in summary["prevalence"].values())
    labels = _tables(cohort)["labels"]
    assert labels[[c for c in CTRATE_LABELS if c not in RENDERED]].to_numpy().sum() == 0
    assert set(np.unique(labels[list(CTRATE_LABELS)])) <= {0, 1}
    assert labels[list(RENDERED)].to_numpy().sum() > 0


def test_present_labels_have_masks_and_absent_ones_do_not(cohort):
    for _, row in _tables(cohort)["labels"].iterrows():
        folder = cohort / "radgenome" / "masks" / f"seg_{row['VolumeName'][:-7]}"
        for label in RENDERED:
            assert (folder / f"{slug(label)}.nii.gz").is_file() == bool(row[label]), (row["VolumeName"], label)


KEYWORDS = {
    "Lung nodule": "nodul", "Emphysema": "emphysema", "Lung opacity": "opacit", "Consolidation": "consolidation",
    "Atelectasis": "atelectasis", "Mosaic attenuation pattern": "mosaic", "Pleural effusion": "pleural effusion",
    "Pericardial effusion": "pericardial effusion", "Cardiomegaly": "cardiomegaly",
    "Coronary artery wall calcification": "coronary", "Hiatal hernia": "hiatal hernia",
    "Lymphadenopathy": "lymph", "Medical material": "pacemaker|venous port",
    "Arterial wall calcification": "aort",
}


def test_reports_agree_with_labels(cohort):
    """A present label is stated positively; an absent one only inside a negated sentence."""
    t = _tables(cohort)
    for (_, report), (_, labels) in zip(t["reports"].iterrows(), t["labels"].iterrows()):
        text = f"{report['Findings_EN']} {report['Impressions_EN']}".lower()
        sentences = re.split(r"(?<=\.)\s+", text)
        for label in RENDERED:
            hits = [s for s in sentences if re.search(KEYWORDS[label], s)]
            positive = [s for s in hits if not s.startswith(("no ", "there is no "))]
            if label == "Arterial wall calcification":  # 'aorta' also appears in normal sentences
                positive = [s for s in positive if "calc" in s and "coronary" not in s]
            assert bool(positive) == bool(labels[label]), (labels["VolumeName"], label, hits)
    assert t["reports"]["ClinicalInformation_EN"].str.len().min() > 0
    assert t["reports"]["Technique_EN"].nunique() > 1


@pytest.fixture(scope="module")
def everything():
    """One reconstruction (matrix 128, easy) with every rendered finding present."""
    rng = np.random.default_rng(11)
    anatomy = sample_anatomy(rng)
    pose = Pose(unit_mm=UNIT_MM, shift_mm=(2.0, -3.0), angle_deg=3.0, c_range=(-0.95, 1.02))
    findings = sample_findings(rng, anatomy, list(RENDERED), DIFFICULTIES["easy"], pose.unit_mm)
    scan = ScanSpec(pose, contrast=False, table=True, findings=tuple(findings))
    recon = ReconSpec(GridSpec(128, 0.8, 1.5), "soft", 20.0, raw=False, seed=1)
    return render(anatomy, scan, recon, DIFFICULTIES["easy"])


def test_findings_lie_in_their_organs(everything):
    f, r = everything.findings, everything.regions
    assert set(f) == {slug(label) for label in RENDERED}
    assert all(mask.any() for mask in f.values())
    for name in ("lung_nodule", "emphysema", "consolidation", "lung_opacity", "atelectasis",
                 "mosaic_attenuation_pattern"):
        assert (f[name] & ~r["lung"]).sum() == 0, name
    assert (f["pleural_effusion"] & ~r["pleura"]).sum() == 0
    assert (f["arterial_wall_calcification"] & ~r["aorta"]).sum() == 0
    assert (f["lymphadenopathy"] & ~r["mediastinum"]).sum() == 0
    assert (f["hiatal_hernia"] & r["mediastinum"]).sum() > 0.8 * f["hiatal_hernia"].sum()
    assert np.array_equal(f["cardiomegaly"], r["heart"])
    heart, mm = r["heart"], (1.5, 0.8, 0.8)  # (Z, Y, X) spacing of the fixture
    outside = ndimage.distance_transform_edt(~heart, sampling=mm)
    inside = ndimage.distance_transform_edt(heart, sampling=mm)
    calc = f["coronary_artery_wall_calcification"]
    assert outside[calc].max() < 5.0 and inside[calc].max() < 5.0  # on the heart surface (spots ~3 mm)
    assert 0 < outside[f["pericardial_effusion"]].max() < 0.2 * UNIT_MM  # a shell around the heart
    body = ndimage.binary_fill_holes(everything.stored > -500, structure=np.ones((1, 3, 3)))
    assert (f["medical_material"] & ~body).sum() == 0


def test_hu_ranges_are_plausible(everything):
    hu, r, f = everything.stored.astype(np.float32), everything.regions, everything.findings
    assert np.all(hu[:, :3, :3] == -1000)  # air outside the body
    clean_lung = r["lung"] & ~np.any([m for m in f.values()], axis=0)
    assert -900 <= np.median(hu[clean_lung]) <= -800
    heart = ndimage.binary_erosion(r["heart"], iterations=2) & ~f["pericardial_effusion"]
    assert 20 <= np.median(hu[heart]) <= 60
    assert np.median(hu[r["bone"]]) > 300
    assert np.median(hu[f["medical_material"]]) > 1000


def test_easy_findings_are_visible_at_64(everything):
    """Every lesion keeps several voxels after resampling to 64 x 64 in-plane and stands out."""
    hu = everything.stored.astype(np.float32)
    zoom = (1.5 / (0.8 * 2), 0.5, 0.5)  # (Z, Y, X) to 1.6 mm, 64 x 64
    for name, mask in everything.findings.items():
        if name == "cardiomegaly":
            continue
        host = everything.regions[HOST_REGION[name]] if name in HOST_REGION else None
        rows = [row for row in lesions(hu, mask, zoom, host) if not row["lost"]]
        largest = max(rows, key=lambda row: row["voxels"])
        assert largest["extent"] >= 3 and largest["voxels"] >= 8, (name, largest)
        assert abs(largest["contrast"]) >= 30, (name, largest)


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "synth.json"}


def test_same_seed_same_files_whatever_the_workers(tmp_path):
    one = write_cohort(SynthConfig(out=str(tmp_path / "a"), n=5, seed=9, matrix=48))
    write_cohort(SynthConfig(out=str(tmp_path / "b"), n=5, seed=9, matrix=48, workers=2))
    write_cohort(SynthConfig(out=str(tmp_path / "c"), n=5, seed=10, matrix=48))
    a, b, c = (_digest(tmp_path / x) for x in "abc")
    assert a == b and len(a) > 5 * 10
    assert a != c
    assert one["volumes"] == 5


def test_plan_hits_n_and_keeps_patients_whole():
    plans, prevalence = plan_cohort(SynthConfig(out="unused", n=200, seed=1, val_fraction=0.25))
    assert sum(sum(p.recons) for p in plans) == 200
    assert sum(len(p.raw) for p in plans) == 200 and sum(sum(p.raw) for p in plans) == 40
    valid = [p for p in plans if p.split == "valid"]
    assert len(valid) == round(0.25 * len(plans))
    assert sorted(p.number for p in valid) == list(range(1, len(valid) + 1))
    assert any(len(p.recons) > 1 for p in plans) and any(max(p.recons) > 1 for p in plans)


def test_cli_writes_a_small_cohort(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path / "c"), "--n", "6", "--matrix", "48", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "wrote 6 volumes" in out and "label prevalence" in out
    assert len(list((tmp_path / "c" / "dataset").rglob("*.nii.gz"))) == 6
    assert main(["synth", "--out", str(tmp_path / "d"), "--n", "0"]) == 2


def _positives(result) -> set[str]:
    """Labels extract_labels calls present, whether it returns a mapping or a collection."""
    if isinstance(result, dict):
        return {label for label, value in result.items() if value is True or value == 1}
    return set(result)


def test_report_parser_reads_the_labels_and_regions_back(cohort):
    """ctvlp.data.reports agrees with the written labels and puts each region sentence in its organ."""
    reports = pytest.importorskip("ctvlp.data.reports")
    t = _tables(cohort)
    for (_, report), (_, labels) in zip(t["reports"].iterrows(), t["labels"].iterrows()):
        found = _positives(reports.extract_labels(f"{report['Findings_EN']} {report['Impressions_EN']}"))
        expected = {label for label in RENDERED if labels[label] == 1}
        assert found & set(RENDERED) == expected, (labels["VolumeName"], report["Findings_EN"])
        assert not found & (set(CTRATE_LABELS) - set(RENDERED))
    regions = t["regions"].merge(t["reports"], left_on="Volumename", right_on="VolumeName")
    for volume, rows in regions.groupby("Volumename"):
        organs = reports.organ_sentences(rows["Findings_EN"].iloc[0])
        for region, sentence in zip(rows["Anatomy"], rows["Sentence"]):
            organ = reports.canonical_organ(region)
            assert any(sentence.strip() in s for s in organs.get(organ, [])), (volume, region, sentence, organs)


SLOTS = {"side": "left", "adj": "left", "where": "on both sides", "lungs": "both lungs", "lobe": "upper lobe",
         "size": "9", "station": "subcarinal", "segment": "aortic arch", "lead": "lead", "end": "right ventricle",
         "kind": "pacemaker"}


def test_every_report_template_reads_back_as_its_label():
    """Each positive phrasing yields exactly its label; negations and normal sentences yield none."""
    parser = pytest.importorskip("ctvlp.data.reports")
    from ctvlp.data.synth.reports import IMPRESSION, NEGATIVE, NORMAL, POSITIVE, _fill

    variants = [SLOTS, {**SLOTS, "vessel": "circumflex"}, {**SLOTS, "vessel": "right", "kind": "venous port",
                                                          "lead": "catheter", "end": "superior vena cava"},
                {**SLOTS, "vessel": "left anterior descending", "segment": "descending aorta"}]
    for label, templates in {**POSITIVE, **IMPRESSION}.items():
        for template in templates:
            for slots in variants:
                text = _fill(template, {"vessel": "right", **slots})
                assert _positives(parser.extract_labels(text)) == {label}, (label, text)
    for sentence in [s for group in (*NEGATIVE.values(), *NORMAL.values()) for s in group]:
        assert _positives(parser.extract_labels(sentence)) == set(), sentence


def test_anatomy_sits_where_it_should_in_world_coordinates(cohort):
    """Through the files' affines: heart left of the trachea (RAS x smaller) and in front of the spine,
    thyroid above the heart, abdomen below it."""
    for folder in sorted((cohort / "radgenome" / "masks").iterdir())[:4]:
        def centre(name: str) -> np.ndarray:
            img = nib.load(str(folder / f"{name}.nii.gz"))
            ijk = np.argwhere(np.asarray(img.dataobj) > 0).mean(axis=0)  # (3,) mean voxel index
            return img.affine[:3, :3] @ ijk + img.affine[:3, 3]  # RAS mm

        heart, trachea, abdomen = centre("heart"), centre("trachea and bronchie"), centre("abdomen")
        assert heart[0] < trachea[0] and heart[1] > trachea[1] and abdomen[2] < heart[2] < trachea[2]
        if (folder / "thyroid.nii.gz").is_file():
            assert centre("thyroid")[2] > trachea[2] > heart[2]
