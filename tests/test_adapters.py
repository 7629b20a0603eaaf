"""Adapters -> Manifest: CT-RATE (+ RadGenome), generic CSV/JSONL, label harmonisation, load_row fixes.

Every dataset here is a tiny fixture written by the tests themselves (NIfTI files of a few hundred
voxels and hand-made CSVs), in CT-RATE's own layout.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from ctvlp.data.adapters import ctrate, fixes, generic, labelmap, load_row
from ctvlp.data.adapters.common import split_by_patient
from ctvlp.data.labels import CTRATE_LABELS
from ctvlp.data.manifest import Manifest
from ctvlp.errors import BadDatasetError, BadVolumeError
from ctvlp.io.volume import Volume

FINDINGS = ("Trachea and both main bronchi are open. There is a 5 mm nodule in the right lung. "
            "Heart size is normal. No pleural effusion.")


def phantom_hu(shape=(16, 14, 6)) -> np.ndarray:
    """(X, Y, Z) int16 HU: air around a soft-tissue body holding two lungs."""
    hu = np.full(shape, -1000, dtype=np.int16)
    hu[2:-2, 2:-2, :] = 40
    hu[3:7, 4:10, :] = -850
    hu[9:13, 4:10, :] = -850
    return hu


def write_nifti(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    affine = np.diag([0.7, 0.7, 1.5, 1.0]) if affine is None else affine
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return path


TRAIN = ["train_1_a_1", "train_1_a_2", "train_1_b_1", "train_2_a_1", "train_3_a_1", "train_4_a_1",
         "train_5_a_1", "train_6_a_1", "train_9_a_1"]
VALID = ["valid_1_a_1", "valid_2_a_1"]


def make_ctrate(root: Path, raw: bool = False) -> Path:
    """A CT-RATE tree. Faults: train_7 has no report, train_8's file is missing, train_9's metadata is
    unparseable, train_2 is absent from the labels CSV. Lung nodule is positive except on valid_2."""
    data = root / "dataset"
    array = phantom_hu() + (1024 if raw else 0)
    for stem in TRAIN + VALID + ["train_7_a_1"]:
        split, p, s, _ = stem.split("_")
        write_nifti(data / split / f"{split}_{p}" / f"{split}_{p}_{s}" / f"{stem}.nii.gz", array.astype(np.int16))
    tables = {"train": TRAIN + ["train_8_a_1"], "valid": VALID}
    names = {"train": ("train", "train", "train"), "valid": ("validation", "valid", "validation")}
    for split, stems in tables.items():
        rep, lab, met = names[split]
        vols = [f"{s}.nii.gz" for s in stems]
        _csv(data / f"radiology_text_reports/{rep}_reports.csv", {
            "VolumeName": vols, "ClinicalInformation_EN": ["Cough."] * len(vols),
            "Technique_EN": [np.nan] * len(vols), "Findings_EN": [FINDINGS] * len(vols),
            "Impressions_EN": ["Right lung nodule."] * len(vols)})
        labelled = [v for v in vols if not v.startswith("train_2_")]
        _csv(data / f"multi_abnormality_labels/{lab}_predicted_labels.csv", {
            "VolumeName": labelled,
            **{name: [int(k == 9 and "valid_2" not in v) for v in labelled] for k, name in enumerate(CTRATE_LABELS)}})
        _csv(data / f"metadata/{met}_metadata.csv", {
            "VolumeName": vols, "Manufacturer": ["X"] * len(vols),
            "XYSpacing": ["[abc]" if v.startswith("train_9") else "[0.68, 0.7]" for v in vols],
            "ZSpacing": [1.5] * len(vols), "RescaleIntercept": [-1024] * len(vols),
            "RescaleSlope": [1] * len(vols)})
    return root


def _csv(path: Path, columns: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(columns).to_csv(path, index=False)


@pytest.fixture()
def ctrate_root(tmp_path) -> Path:
    return make_ctrate(tmp_path / "ctrate")


# ---------------------------------------------------------------- CT-RATE


def test_ctrate_rows_ids_splits_and_skips(ctrate_root):
    manifest, skipped = ctrate.build_manifest(ctrate_root, val_fraction=0.0)
    df = manifest.df.set_index("id")
    assert sorted(df.index) == sorted(TRAIN[:-1] + VALID)
    row = df.loc["train_1_b_1"]
    assert (row.patient_id, row.scan_id, row.recon_id, row.split) == ("train_1", "train_1_b", "train_1_b_1", "train")
    assert set(df.loc[VALID, "split"]) == {"test"}  # CT-RATE's valid is the community's test set
    assert row.path == str(ctrate_root.absolute() / "dataset/train/train_1/train_1_b/train_1_b_1.nii.gz")
    assert (row.clinical, row.technique, row.findings) == ("Cough.", "", FINDINGS)
    assert json.loads(row.spacing_hint) == [0.7, 0.68, 1.5]  # PixelSpacing is [row, column]
    assert (row.rescale_slope, row.rescale_intercept) == (1.0, -1024.0)
    reasons = {Path(name).name.removesuffix(".nii.gz"): reason for name, reason in skipped}
    assert set(reasons) == {"train_7_a_1", "train_8_a_1", "train_9_a_1"}
    assert "no row in" in reasons["train_7_a_1"] and "no volume file" in reasons["train_8_a_1"]
    assert "metadata" in reasons["train_9_a_1"]


def test_ctrate_labels_missing_volume_is_na_not_zero(ctrate_root):
    manifest, _ = ctrate.build_manifest(ctrate_root)
    values, available = manifest.labels()
    ids = list(manifest.df["id"])
    assert manifest.label_names == list(CTRATE_LABELS)
    assert not available[ids.index("train_2_a_1")].any()
    assert available[ids.index("train_1_a_1")].all()
    assert values[ids.index("train_1_a_1")].tolist() == [float(k == 9) for k in range(18)]


def test_ctrate_valid_is_carved_by_patient_deterministically(ctrate_root):
    first, _ = ctrate.build_manifest(ctrate_root, val_fraction=0.34, seed=3)
    again, _ = ctrate.build_manifest(ctrate_root, val_fraction=0.34, seed=3)
    pd.testing.assert_frame_equal(first.df, again.df)
    per_patient = first.df.groupby("patient_id")["split"].nunique()
    assert (per_patient == 1).all()
    valid_patients = first.df[first.df["split"] == "valid"]["patient_id"].nunique()
    assert valid_patients == 2  # round(0.34 * 6 train patients)
    assert not first.df[first.df["split"] == "valid"]["patient_id"].str.startswith("valid").any()


def test_split_by_patient_counts_and_stability():
    patients = [f"p{i}" for i in range(100)]
    split = split_by_patient(patients, {"test": 0.1, "valid": 0.2}, seed=0)
    assert [sum(v == s for v in split.values()) for s in ("test", "valid", "train")] == [10, 20, 70]
    more = split_by_patient(patients + ["p100", "p101"], {"test": 0.1, "valid": 0.2}, seed=0)
    assert sum(split[p] != more[p] for p in patients) <= 4  # adding patients moves few
    assert set(split_by_patient(["a", "b"], {"valid": 0.01}, 0).values()) == {"train", "valid"}


@pytest.mark.parametrize("xy, z, expected", [
    ("[0.68, 0.68]", "1.5", [0.68, 0.68, 1.5]), ("(0.6 0.7)", 2, [0.7, 0.6, 2.0]),
    ("0.5", "1", [0.5, 0.5, 1.0]), ("[7.5e-1,0.75]", " 3.0 ", [0.75, 0.75, 3.0])])
def test_parse_spacing(xy, z, expected):
    assert ctrate.parse_spacing(xy, z) == pytest.approx(expected)


@pytest.mark.parametrize("xy, z", [("abc", "1"), ("[0, 0.7]", "1"), ("[0.7, 0.7, 0.7]", "1"),
                                   ("[0.7, 0.7]", ""), (float("nan"), "1")])
def test_parse_spacing_refuses(xy, z):
    with pytest.raises(ValueError):
        ctrate.parse_spacing(xy, z)


def test_ctrate_bad_roots_name_the_path(tmp_path, ctrate_root):
    with pytest.raises(BadDatasetError, match="no dataset/ folder") as err:
        ctrate.build_manifest(tmp_path / "nowhere")
    assert err.value.path == str(tmp_path / "nowhere")
    (ctrate_root / "dataset/metadata/validation_metadata.csv").unlink()
    with pytest.raises(BadDatasetError, match="file not found") as err:
        ctrate.build_manifest(ctrate_root)
    assert err.value.path.endswith("validation_metadata.csv")


def make_radgenome(rg: Path) -> Path:
    rows = [("train_1_a_1.nii.gz", "trachea and bronchie", "Trachea is open."),
            ("train_1_a_1.nii.gz", "left lung", "Left lung is clear."),
            ("train_1_a_1.nii.gz", np.nan, "Whole report row."),
            ("train_1_a_1.nii.gz", "zzz region", "Odd region sentence.")]
    _csv(rg / "train_region_report.csv", dict(zip(("Volumename", "Anatomy", "Sentence"), zip(*rows))))
    _csv(rg / "valid_region_report.csv", {"Volumename": ["valid_1_a_1.nii.gz"], "Anatomy": ["heart"],
                                          "Sentence": ["Heart size is normal."]})
    mask = np.zeros((16, 14, 6), dtype=np.uint8)
    for name in ("left lung", "lung_nodule"):
        write_nifti(rg / "masks/seg_train_1_a_1" / f"{name}.nii.gz", mask)
    return rg


def test_radgenome_sentences_and_masks(ctrate_root, tmp_path):
    from ctvlp.data.reports import canonical_organ

    rg = make_radgenome(tmp_path / "rg")
    manifest, _ = ctrate.build_manifest(ctrate_root, radgenome=rg)
    df = manifest.df.set_index("id")
    organs = json.loads(df.loc["train_1_a_1", "organ_sentences"])
    assert organs[canonical_organ("left lung")] == ["Left lung is clear."]
    assert organs[canonical_organ("trachea and bronchie")] == ["Trachea is open."]
    assert organs["zzz region"] == ["Odd region sentence."]
    assert "Whole report row." not in sum(organs.values(), [])
    masks = json.loads(df.loc["train_1_a_1", "masks"])
    assert set(masks) == {canonical_organ("left lung"), "lung_nodule"}
    assert all(Path(p).is_file() for p in masks.values())
    assert json.loads(df.loc["train_2_a_1", "masks"]) == {}
    assert json.loads(df.loc["train_2_a_1", "organ_sentences"])  # parser fallback: not empty


def test_radgenome_missing_region_csv(ctrate_root, tmp_path):
    rg = make_radgenome(tmp_path / "rg")
    (rg / "valid_region_report.csv").unlink()
    with pytest.raises(BadDatasetError, match="region-report CSV"):
        ctrate.build_manifest(ctrate_root, radgenome=rg)


# ---------------------------------------------------------------- HU and spacing fixes


def test_decide_hu_already_hu_raw_and_ambiguous():
    hu = phantom_hu()
    assert fixes.decide_hu(hu, 1.0, -1024.0).kind == "hu"
    assert fixes.decide_hu(hu + 1024, 1.0, -1024.0).kind == "rescaled"
    # raw with a padding value outside the scan circle (stored -2000 -> -3024 HU): still raw
    padded = hu + 1024
    padded[:3, :3, :] = -2000
    assert fixes.decide_hu(padded, 1.0, -1024.0).kind == "rescaled"
    # already HU with padding at -3024 and air clipped to -1024: still HU
    clipped = np.maximum(hu, -1024)
    clipped[:3, :3, :] = -3024
    assert fixes.decide_hu(clipped, 1.0, -1024.0).kind == "hu"
    # other pairs: the pair must put the stored air level near air
    assert fixes.decide_hu((hu + 1024) // 2, 2.0, -1024.0).kind == "rescaled"
    assert fixes.decide_hu((hu + 1024) // 2, 2.0, -2048.0).kind == "ambiguous"
    assert fixes.decide_hu(hu + 1024, 1.0, -8192.0).kind == "ambiguous"
    assert fixes.decide_hu(hu + 1024, float("nan"), float("nan")).kind == "ambiguous"
    soft = np.full((8, 8, 4), 40, dtype=np.int16)  # no air at all
    assert fixes.decide_hu(soft, 1.0, -1024.0).kind == "ambiguous"


@pytest.mark.parametrize("name", ["chest_ct_angio_1p5mm.nii.gz", "abdomen_ct_3mm_30slices.nii.gz"])
def test_decide_hu_on_real_ct(real_dir, name):
    hu = np.asarray(nib.load(str(real_dir / name)).dataobj)  # int16 HU
    assert fixes.decide_hu(hu, 1.0, -1024.0).kind == "hu"
    raw = Volume((hu + 1024).astype(np.int16), np.eye(4))  # what a scanner stores with intercept -1024
    back = fixes.to_hu(raw, 1.0, -1024.0)
    assert back.meta["hu_decision"] == "rescaled"
    np.testing.assert_array_equal(back.array, hu)


def test_to_hu_values_and_meta():
    raw = Volume(phantom_hu() + 1024, np.eye(4))
    out = fixes.to_hu(raw, 1.0, -1024.0)
    np.testing.assert_array_equal(out.array, phantom_hu())
    assert out.array.dtype == np.int16 and out.meta["hu_decision"] == "rescaled"
    kept = fixes.to_hu(Volume(phantom_hu(), np.eye(4)), 1.0, -1024.0)
    np.testing.assert_array_equal(kept.array, phantom_hu())
    assert kept.meta["hu_decision"] == "hu" and kept.meta["metadata_rescale"] == [1.0, -1024.0]


def test_spacing_hint_only_replaces_an_unset_header():
    flipped = np.diag([-1.0, -1.0, 1.0, 1.0])
    flipped[:3, 3] = [5, 6, 7]
    vol = fixes.apply_spacing_hint(Volume(phantom_hu(), flipped), "[0.68, 0.7, 1.5]")
    np.testing.assert_allclose(vol.spacing, [0.68, 0.7, 1.5])
    assert vol.orientation == "LPS" and vol.meta["spacing_source"] == "metadata"
    # world position of voxel (1, 2, 3): origin kept, steps along the original axis directions
    np.testing.assert_allclose(vol.index_to_world([1, 2, 3]), [[5 - 0.68, 6 - 1.4, 7 + 4.5]])
    real = np.diag([0.8, 0.8, 2.0, 1.0])
    kept = fixes.apply_spacing_hint(Volume(phantom_hu(), real), "[0.68, 0.7, 1.5]")
    np.testing.assert_array_equal(kept.affine, real)
    assert kept.meta["spacing_source"] == "header"
    oblique = np.eye(4)
    oblique[:3, :3] = [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]]
    assert fixes.header_spacing_unset(oblique) and not fixes.header_spacing_unset(real)


@pytest.mark.parametrize("raw", [False, True])
def test_load_row_ctrate_ends_in_hu(tmp_path, raw):
    root = make_ctrate(tmp_path / "c", raw=raw)
    manifest, _ = ctrate.build_manifest(root)
    row = manifest.df.set_index("id").loc["train_3_a_1"].to_dict() | {"id": "train_3_a_1"}
    volume = load_row(row)
    np.testing.assert_array_equal(volume.array, phantom_hu())
    assert volume.meta["hu_decision"] == ("rescaled" if raw else "hu")
    np.testing.assert_allclose(volume.spacing, [0.7, 0.7, 1.5])  # the header's, which is set


def test_load_row_uses_hint_when_header_unset(tmp_path):
    path = write_nifti(tmp_path / "v.nii.gz", phantom_hu(), np.eye(4))
    row = {"source": "ct-rate", "path": str(path), "spacing_hint": "[0.68, 0.68, 1.5]",
           "rescale_slope": 1.0, "rescale_intercept": -1024.0}
    volume = load_row(row)
    np.testing.assert_allclose(volume.spacing, [0.68, 0.68, 1.5])
    assert volume.meta["spacing_source"] == "metadata" and volume.meta["hu_decision"] == "hu"


@pytest.mark.parametrize("array, slope, intercept", [
    (np.full((8, 8, 4), 40, np.int16), 1.0, -1024.0),  # no air at all: ambiguous, kept, then refused
    (phantom_hu() + 1024, float("nan"), float("nan")),  # raw values but no rescale pair
])
def test_load_row_ambiguous_then_ct_check_refuses(tmp_path, array, slope, intercept):
    path = write_nifti(tmp_path / "v.nii.gz", array.astype(np.int16))
    row = {"source": "ct-rate", "path": str(path), "spacing_hint": "", "rescale_slope": slope,
           "rescale_intercept": intercept}
    assert fixes.decide_hu(array, slope, intercept).kind == "ambiguous"
    with pytest.raises(BadVolumeError, match="do not look like CT"):
        load_row(row)


# ---------------------------------------------------------------- label harmonisation


def test_labelmap_apply_na_for_labels_the_dataset_lacks():
    df = pd.DataFrame({"nodule": ["1", "0", ""], "opacity": [0, None, None], "groundglass": [1, 0, None],
                       "age": [50, 60, 70], "NoteAcc_DEID": ["a", "b", "c"]})
    result = labelmap.apply(df, labelmap.load_mapping("rad_chestct"), CTRATE_LABELS)
    frame = result.frame
    assert list(frame["label:Lung nodule"].astype("Float64").fillna(-1)) == [1, 0, -1]
    assert list(frame["label:Lung opacity"].astype("Float64").fillna(-1)) == [1, 0, -1]  # any positive
    assert frame["label:Mosaic attenuation pattern"].isna().all()  # not annotated: <NA>, never 0
    assert result.unknown_columns == ["age"]
    assert result.available == ["Lung nodule", "Lung opacity"]
    with pytest.raises(ValueError, match="nodule"):
        labelmap.apply(pd.DataFrame({"nodule": ["2"]}), labelmap.load_mapping("rad_chestct"))


def test_load_mapping_errors(tmp_path):
    with pytest.raises(BadDatasetError, match="packaged ones"):
        labelmap.load_mapping("no_such_mapping")
    bad = tmp_path / "bad.yaml"
    bad.write_text("columns: [a, b]\n")
    with pytest.raises(BadDatasetError, match="columns"):
        labelmap.load_mapping(bad)
    assert labelmap.load_mapping(None).columns["Cardiomegaly"] == "Cardiomegaly"


def test_two_sources_merge_with_availability(ctrate_root, tmp_path):
    ct, _ = ctrate.build_manifest(ctrate_root)
    write_nifti(tmp_path / "rad/a.nii.gz", phantom_hu())
    write_nifti(tmp_path / "rad/b.nii.gz", phantom_hu())
    _csv(tmp_path / "rad/list.csv", {"path": ["a.nii.gz", "b.nii.gz"], "nodule": [1, 0],
                                     "pleural_effusion": [0, 1], "split": ["train", "test"]})
    rad, _ = generic.build_manifest(tmp_path / "rad/list.csv", label_map="rad_chestct", source="rad-chestct")
    merged = labelmap.merge([ct, rad])
    values, available = merged.labels()
    names = merged.label_names
    is_rad = (merged.df["source"] == "rad-chestct").to_numpy()
    assert names == list(CTRATE_LABELS)
    assert available[is_rad].sum(axis=0).tolist() == [2 * (n in ("Lung nodule", "Pleural effusion")) for n in names]
    assert values[is_rad][:, names.index("Pleural effusion")].tolist() == [0, 1]
    assert available[~is_rad & (merged.df["id"] != "train_2_a_1").to_numpy()].all()


def test_merge_unites_different_vocabularies():
    a = Manifest(pd.DataFrame({"id": ["a"], "split": ["train"], "path": ["x"], "label:Emphysema": [1]}))
    b = Manifest(pd.DataFrame({"id": ["b"], "split": ["train"], "path": ["y"], "label:Nodule": [0]}))
    values, available = labelmap.merge([a, b]).labels()
    np.testing.assert_array_equal(available, [[True, False], [False, True]])
    with pytest.raises(ValueError, match="duplicate"):
        labelmap.merge([a, a])


# ---------------------------------------------------------------- generic CSV / JSONL


def test_generic_csv_paths_reports_labels_masks(tmp_path):
    folder = tmp_path / "data"
    write_nifti(folder / "scans/s1.nii.gz", phantom_hu())
    write_nifti(tmp_path / "abs.nii.gz", phantom_hu())
    write_nifti(folder / "masks/s1_lung.nii.gz", np.zeros((16, 14, 6), np.uint8))
    _csv(folder / "list.csv", {
        "path": ["scans/s1.nii.gz", str(tmp_path / "abs.nii.gz"), "scans/missing.nii.gz"],
        "report": [f"FINDINGS: {FINDINGS}\nIMPRESSION: Nodule.", "", "x"],
        "patient_id": ["P1", "P2", "P3"], "label:Emphysema": [1, "", 0], "mask:lung": ["masks/s1_lung.nii.gz", "", ""]})
    manifest, skipped = generic.build_manifest(folder / "list.csv")
    df = manifest.df.set_index("id")
    assert list(df.index) == ["s1", "abs"]
    assert df.loc["s1", "path"] == str((folder / "scans/s1.nii.gz").absolute())
    assert "nodule" in df.loc["s1", "findings"] and "Nodule" in df.loc["s1", "impressions"]
    assert json.loads(df.loc["s1", "masks"]) == {"lung": str((folder / "masks/s1_lung.nii.gz").absolute())}
    assert df["label:Emphysema"].tolist()[0] == 1 and pd.isna(df["label:Emphysema"].tolist()[1])
    assert df["label:Cardiomegaly"].isna().all()
    assert skipped == [("scans/missing.nii.gz", f"volume file missing: {folder / 'scans/missing.nii.gz'}")]


def test_generic_jsonl_skips_non_text_reports_and_bad_lines(tmp_path):
    write_nifti(tmp_path / "a.nii.gz", phantom_hu())
    lines = [{"path": "a.nii.gz", "id": 7, "findings": "Heart normal.", "label:Emphysema": True,
              "masks": {}}, {"path": "a.nii.gz", "id": "n", "report": 12},
             {"path": "a.nii.gz", "id": "o", "report": {"findings": "x"}}, "not json", [1, 2],
             {"path": "a.nii.gz", "id": "s", "split": "holdout"}]
    (tmp_path / "l.jsonl").write_text("\n".join(l if isinstance(l, str) else json.dumps(l) for l in lines))
    manifest, skipped = generic.build_manifest(tmp_path / "l.jsonl")
    assert list(manifest.df["id"]) == ["7"] and manifest.df["label:Emphysema"].tolist() == [1]
    reasons = [r for _, r in skipped]
    assert reasons[:2] == ["report is not text (got int)", "report is not text (got dict)"]
    assert reasons[2].startswith("line 4: not JSON") and reasons[3] == "line 5: not a JSON object"
    assert "unknown split" in reasons[4]


def test_generic_hash_split_is_by_patient(tmp_path):
    write_nifti(tmp_path / "a.nii.gz", phantom_hu())
    n = 40
    _csv(tmp_path / "l.csv", {"path": ["a.nii.gz"] * n, "id": [f"v{i}" for i in range(n)],
                              "patient_id": [f"p{i // 2}" for i in range(n)]})
    manifest, _ = generic.build_manifest(tmp_path / "l.csv", val_fraction=0.1, test_fraction=0.2)
    df = manifest.df
    assert (df.groupby("patient_id")["split"].nunique() == 1).all()
    assert df.groupby("split")["patient_id"].nunique().to_dict() == {"test": 4, "train": 14, "valid": 2}


def test_generic_bad_file(tmp_path):
    (tmp_path / "l.csv").write_text("file,report\na.nii.gz,x\n")
    with pytest.raises(BadDatasetError, match="path"):
        generic.build_manifest(tmp_path / "l.csv")
    with pytest.raises(BadDatasetError, match="not found"):
        generic.build_manifest(tmp_path / "none.csv")
