"""Bad input through the commands a user runs: a damaged cache, empty splits, one-class labels, a 1-slice
volume, NaN losses, strict JSON logs, the bad-volume list (non-CT modalities, multi-frame DICOM, mixed
series, huge headers, zero spacing), bad report files and label values, and ids that would escape --out.

Each case is one line on stderr and exit code 2, or a row skipped and listed where the input is a dataset.
One tiny synthetic cache (12 volumes plus two 1-slice ones) and one 2-step debug run serve the module.
"""

from __future__ import annotations

import json
import shutil
import tracemalloc
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
import torch
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

import ctvlp
from ctvlp.cli import main
from ctvlp.cli.segment import output_paths
from ctvlp.config import apply_overrides
from ctvlp.data.cache import Cache, check_volume
from ctvlp.data.manifest import Manifest
from ctvlp.errors import BadDatasetError
from ctvlp.eval.html import curve_figure
from ctvlp.recipes import get_recipe
from ctvlp.data.loader import set_epoch
from ctvlp.train.loop import Trainer
from ctvlp.train.metrics_log import read_metrics
from conftest import make_synthetic_cache

pytestmark = pytest.mark.usefixtures("one_thread")

ONE_CLASS, TWO_CLASS = "Cardiomegaly", "Emphysema"
"""Labels the fixture sets to one class (every test volume positive) and to both classes on the test split."""


def strict_json(text: str):
    """json.loads that refuses NaN, Infinity and -Infinity (what jq and browsers refuse)."""
    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")
    return json.loads(text, parse_constant=refuse)


def one_error_line(capsys, argv, *needles) -> str:
    """Run the CLI: exit code 2 and exactly one stderr line holding every needle."""
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and all(n in err for n in needles), err
    return err


def train(cache, out, *extra) -> int:
    return main(["train", "--recipe", "demo", "--debug", "--data", str(cache), "--out", str(out), "--no-progress",
                 "--steps", "2", *extra])


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    """The synthetic cohort's cache plus two 1-slice volumes (one train, one test), prepared as a user would:
    synth -> manifest ctrate; a generic CSV of the 1-slice files -> manifest generic -> merge -> prepare into
    the same cache. Labels: ONE_CLASS positive on every test volume, TWO_CLASS 0/1 on test and valid."""
    root = tmp_path_factory.mktemp("bad_inputs")
    cache = make_synthetic_cache(root, 12, 11)
    source = sorted((root / "cohort" / "dataset" / "train").rglob("*.nii.gz"))[0]
    img = nib.load(source)
    hu = np.asanyarray(img.dataobj)
    if hu.min() > -500:  # stored raw (HU + 1024) like part of CT-RATE
        hu = (hu - 1024).astype(np.int16)
    rows = []
    for k, split in enumerate(("train", "test")):
        path = root / f"one_{split}.nii.gz"
        z = hu.shape[2] // 2 + k
        nib.save(nib.Nifti1Image(hu[:, :, z:z + 1], img.affine), path)
        rows.append({"path": path.name, "id": f"one_{split}", "split": split,
                     "report": "FINDINGS: Heart size is normal. No pleural effusion. IMPRESSION: Normal."})
    pd.DataFrame(rows).to_csv(root / "one.csv", index=False)
    assert main(["manifest", "generic", str(root / "one.csv"), "--out", str(root / "one.parquet")]) == 0
    assert main(["manifest", "merge", str(root / "m.parquet"), str(root / "one.parquet"),
                 "--out", str(root / "all.parquet")]) == 0
    df = Manifest.load(root / "all.parquet").df
    for split in ("test", "valid"):
        rows = df["split"] == split
        df.loc[rows, f"label:{TWO_CLASS}"] = np.arange(rows.sum()) % 2
    df.loc[df["split"] == "test", f"label:{ONE_CLASS}"] = 1
    Manifest(df).save(root / "all.parquet")
    assert main(["prepare", "--manifest", str(root / "all.parquet"), "--out", str(cache)]) == 0
    return {"root": root, "cache": cache, "cohort": root / "cohort"}


@pytest.fixture(scope="module")
def run(data) -> Path:
    """`ctvlp train` (2 debug steps, evaluation at the end) on the fixture's cache."""
    out = data["root"] / "run"
    assert train(data["cache"], out, "--set", "log_every=1") == 0
    return out


@pytest.fixture
def cache_copy(data, tmp_path) -> Path:
    """A copy of the fixture's cache to damage."""
    return Path(shutil.copytree(data["cache"], tmp_path / "cache"))


def ids_of(cache: Path, split: str) -> list[str]:
    index = Cache(cache).index
    return index.loc[index["split"] == split, "id"].tolist()


# ------------------------------------------------------------------------- a damaged cache


def damage(cache: Path, vids: list[str]) -> list[Path]:
    """Three ways a cached volume breaks: image.npy truncated, overwritten with garbage, folder gone."""
    volumes = cache / "volumes"
    image = volumes / vids[0] / "image.npy"
    image.write_bytes(image.read_bytes()[:1000])
    garbage = volumes / vids[1] / "image.npy"
    garbage.write_bytes(np.random.default_rng(0).bytes(garbage.stat().st_size))
    shutil.rmtree(volumes / vids[2])
    return [image, garbage, volumes / vids[2]]


def test_training_skips_damaged_volumes_lists_them_and_stops_beyond_the_limit(cache_copy, tmp_path, capsys):
    broken = damage(cache_copy, ids_of(cache_copy, "train")[:3])
    assert train(cache_copy, tmp_path / "run", "--no-eval", "--set", "data.batch_size=2") == 0  # 7 - 3 volumes left
    listed = pd.read_csv(tmp_path / "run" / "bad_samples.csv")
    assert listed["file"].tolist() == [str(p) for p in broken]
    assert listed["reason"].str.contains("truncated or overwritten").iloc[0]
    assert "magic string is not correct" in listed["reason"].iloc[1] and "folder is missing" in listed["reason"].iloc[2]
    err = capsys.readouterr().err
    assert "skipped 3 missing or damaged cached training volume(s)" in err and "bad_samples.csv" in err
    assert [r["step"] for r in read_metrics(tmp_path / "run")] == [2]
    one_error_line(capsys, ["train", "--recipe", "demo", "--debug", "--data", cache_copy, "--out", tmp_path / "r2",
                            "--no-progress", "--set", "data.max_bad_samples=2"],
                   "3 cached training volume(s) are missing or damaged, more than data.max_bad_samples=2",
                   *map(str, broken))
    assert not (tmp_path / "r2" / "metrics.jsonl").exists()


def test_check_volume_names_each_missing_or_damaged_file(cache_copy):
    vid = ids_of(cache_copy, "train")[0]
    folder = cache_copy / "volumes" / vid
    assert check_volume(folder) is None
    (folder / "masks.npy").unlink()
    assert check_volume(folder) == (folder / "masks.npy", "cache file is missing")
    (folder / "meta.json").write_text("{")
    file, reason = check_volume(folder)
    assert file == folder / "meta.json" and reason.startswith("unreadable cache metadata")


def test_a_damaged_evaluation_split_is_refused_before_training_and_by_eval(cache_copy, run, tmp_path, capsys):
    masks = cache_copy / "volumes" / "one_test" / "masks.npy"
    masks.write_bytes(masks.read_bytes()[:-3])
    one_error_line(capsys, ["train", "--recipe", "demo", "--debug", "--data", cache_copy, "--out", tmp_path / "r",
                            "--no-progress"], "split 'test'", str(masks), "evaluation needs every one")
    assert not (tmp_path / "r" / "metrics.jsonl").exists()  # refused before step 1, not after the last
    one_error_line(capsys, ["eval", "--checkpoint", run, "--data", cache_copy, "--out", tmp_path / "ev"],
                   str(masks), "where its header needs")


@pytest.mark.parametrize("workers", [0, 2])
def test_a_volume_deleted_during_training_is_named(cache_copy, tmp_path, workers):
    cfg = apply_overrides(get_recipe("demo", debug=True), ["steps=4", f"data.num_workers={workers}"])
    trainer = Trainer(cfg, cache_copy, tmp_path / "run", progress=False)  # every volume checked and fine here
    for vid in ids_of(cache_copy, "train"):
        (cache_copy / "volumes" / vid / "image.npy").unlink()
    with pytest.raises(BadDatasetError, match=r"image\.npy: cannot read the cached array \(No such file"):
        trainer.fit()


# ------------------------------------------------------------------------- empty splits, one class, one slice


def move_split(cache: Path, src: str, dst: str) -> None:
    for shard in (cache / "index").glob("*.parquet"):
        index = pd.read_parquet(shard)
        index.loc[index["split"] == src, "split"] = dst
        index.to_parquet(shard)


def test_empty_splits_are_one_line_errors(cache_copy, run, tmp_path, capsys):
    move_split(cache_copy, "test", "valid")
    one_error_line(capsys, ["eval", "--checkpoint", run, "--data", cache_copy, "--out", tmp_path / "ev"],
                   "no volume in split(s) ['test']")
    one_error_line(capsys, ["train", "--recipe", "demo", "--debug", "--data", cache_copy, "--out", tmp_path / "r",
                            "--no-progress"], "split 'test' is empty")
    move_split(cache_copy, "train", "valid")
    one_error_line(capsys, ["train", "--recipe", "demo", "--debug", "--data", cache_copy, "--out", tmp_path / "r",
                            "--no-progress", "--no-eval"], "split 'train' is empty")


def check_one_class(zero_shot: dict, n_test: int) -> None:
    """ONE_CLASS: AUROC null, a reason, out of the mean; TWO_CLASS scored and in it."""
    assert zero_shot["per_label"][ONE_CLASS]["auroc"] is None
    assert zero_shot["excluded"][ONE_CLASS] == f"single class on test ({n_test} positive of {n_test})"
    assert ONE_CLASS not in zero_shot["labels_in_mean"] and TWO_CLASS in zero_shot["labels_in_mean"]
    assert 0 <= zero_shot["per_label"][TWO_CLASS]["auroc"] <= 1


def test_a_one_class_label_is_null_with_a_reason_in_training_and_ctvlp_eval(run, data, tmp_path, capsys):
    n_test = len(ids_of(data["cache"], "test"))
    check_one_class(strict_json((run / "eval" / "metrics.json").read_text())["zeroshot"]["volume"], n_test)
    assert main(["eval", "--checkpoint", str(run), "--data", str(data["cache"]), "--out", str(tmp_path / "ev"),
                 "--bootstrap", "10", "--tasks", "zeroshot"]) == 0
    metrics = strict_json((tmp_path / "ev" / "metrics.json").read_text())
    check_one_class(metrics["zeroshot"]["volume"], n_test)


def test_a_one_slice_volume_is_repeat_padded_in_a_batch_and_evaluated(data, run, tmp_path):
    trainer = Trainer(get_recipe("demo", debug=True), data["cache"], tmp_path / "t", progress=False)
    loader = trainer.loader
    batch = None
    for epoch in range(4):  # the batch that holds the 1-slice volume (drop_last may leave it out of an epoch)
        set_epoch(loader, epoch)
        batch = next((b for b in loader if "one_train" in b["id"]), None)
        if batch is not None:
            break
    k = batch["id"].index("one_train")
    image, real = batch["image"][k], batch["slice_mask"][k]  # (C, D, H, W), (D,)
    assert image.shape[1] == 8 and real.tolist() == [True] + [False] * 7  # chunk_depth 8, the slice repeated
    assert all(torch.equal(image[:, d], image[:, 0]) for d in range(8))
    from ctvlp.eval.suite import SuiteConfig, run_suite
    from ctvlp.recipes.run import load_trained

    trained = load_trained(run)
    evaluated = run_suite(trained.model, Cache(data["cache"]), trained.config.eval,
                          SuiteConfig.after_training(trained.config.eval))
    test, scores = evaluated.test, evaluated.scores
    assert "one_test" in test.ids and torch.isfinite(test.image_emb).all() and np.isfinite(scores).all()


# ------------------------------------------------------------------------- NaN losses, strict JSON


def test_a_window_of_skipped_steps_logs_null_and_every_json_file_is_strict(data, run, tmp_path, capsys):
    cfg = apply_overrides(get_recipe("demo", debug=True), ["steps=4", "log_every=2", "max_bad_steps=2"])
    trainer = Trainer(cfg, data["cache"], tmp_path / "nan", progress=False)
    objective, calls = trainer.objectives["pairs"], {"n": 0}
    real = objective.forward

    def nan_first_two(**kw):
        calls["n"] += 1
        parts = real(**kw)
        return {k: v * float("nan") for k, v in parts.items()} if calls["n"] <= 2 else parts

    objective.forward = nan_first_two
    assert trainer.fit()["bad_steps"] == 2
    lines = (tmp_path / "nan" / "metrics.jsonl").read_text().splitlines()
    first, second = (strict_json(line) for line in lines)
    assert first["loss"] is None and first["loss_siglip"] is None and first["grad_norm"] is None
    assert first["bad_steps"] == 2 and np.isfinite(second["loss"])
    assert curve_figure(read_metrics(tmp_path / "nan")).startswith("<img")  # the report's curve takes the gap
    assert main(["index", "build", str(data["cohort"] / "dataset" / "valid"), "--checkpoint", str(run),
                 "--out", str(tmp_path / "idx"), "--workers", "0"]) == 0
    written = [run / "metrics.jsonl", run / "eval" / "metrics.json", tmp_path / "idx" / "index.json",
               tmp_path / "idx" / "model" / "config.json", data["cache"] / "preprocessing.json",
               data["cohort"] / "synth.json", *sorted((data["cache"] / "volumes").glob("*/meta.json"))[:3]]
    for path in written:
        for line in path.read_text().splitlines() if path.suffix == ".jsonl" else [path.read_text()]:
            strict_json(line)


# ------------------------------------------------------------------------- bad volume files


CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2.1"
SPACING, DZ = (0.8, 0.7), 2.5


def phantom(frames: int = 8, rows: int = 24, cols: int = 20) -> np.ndarray:
    """(K, rows, cols) int16 HU: air around a body of soft tissue."""
    hu = np.full((frames, rows, cols), -1000, np.int16)
    hu[:, 4:rows - 4, 3:cols - 3] = np.random.default_rng(1).integers(-100, 400, (frames, rows - 8, cols - 6))
    return hu


def _dataset(sop_class: str, modality: str, rows: int, cols: int, series: str) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.SeriesInstanceUID, ds.StudyInstanceUID = modality, series, "1.2.3"
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = rows, cols, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    return ds


def classic_series(folder: Path, hu: np.ndarray, modality="CT", series="1.2.3.4", spacing=SPACING, first=0,
                   rows_cols=None) -> Path:
    """One file per slice, stored as HU + 1024 with RescaleIntercept -1024; slice k at z = 30 + 2.5 k mm."""
    folder.mkdir(parents=True, exist_ok=True)
    for k, plane in enumerate((hu + 1024).astype(np.uint16), start=first):
        ds = _dataset(CT_IMAGE, modality, *(rows_cols or plane.shape), series)
        ds.ImagePositionPatient, ds.ImageOrientationPatient = [-10.0, -20.0, 30.0 + DZ * k], [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness, ds.RescaleSlope, ds.RescaleIntercept = list(spacing), DZ, 1, -1024
        ds.PixelData = plane.tobytes()
        ds.save_as(folder / f"{series}-{k:03d}.dcm", enforce_file_format=True)
    return folder


def enhanced_ct(path: Path, hu: np.ndarray, order: list[int], groups: bool = True) -> Path:
    """One Enhanced CT file: frames in ``order``, each frame's position in PerFrameFunctionalGroupsSequence,
    orientation, spacing and rescale in SharedFunctionalGroupsSequence (``groups=False``: neither)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = _dataset(ENHANCED_CT_IMAGE, "CT", *hu.shape[1:], "1.2.3.5")
    ds.NumberOfFrames = len(order)
    if groups:
        shared, orientation, measures, values = Dataset(), Dataset(), Dataset(), Dataset()
        orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        measures.PixelSpacing, measures.SliceThickness = list(SPACING), DZ
        values.RescaleSlope, values.RescaleIntercept, values.RescaleType = 1, -1024, "HU"
        shared.PlaneOrientationSequence, shared.PixelMeasuresSequence = Sequence([orientation]), Sequence([measures])
        shared.PixelValueTransformationSequence = Sequence([values])
        ds.SharedFunctionalGroupsSequence = Sequence([shared])
        per_frame = []
        for k in order:
            item, position = Dataset(), Dataset()
            position.ImagePositionPatient = [-10.0, -20.0, 30.0 + DZ * k]
            item.PlanePositionSequence = Sequence([position])
            per_frame.append(item)
        ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.PixelData = (hu[order] + 1024).astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def nifti(path: Path, array: np.ndarray, zooms=(0.8, 0.8, 2.0), sform: bool = True) -> Path:
    img = nib.Nifti1Image(array, np.diag([*zooms, 1.0]) if sform else None)
    if not sform:
        img.header["pixdim"][1:4] = zooms
        img.header.set_qform(None, code=0)
        img.header.set_sform(None, code=0)
    nib.save(img, path)
    return path


def huge_nifti(path: Path) -> Path:
    """A .nii whose header declares 30000^3 int16 voxels (54 TB) and that holds 64 bytes of data."""
    header = nib.Nifti1Header()
    header.set_data_shape((30000, 30000, 30000))
    header.set_data_dtype(np.int16)
    with open(path, "wb") as f:
        header.write_to(f)
        f.write(b"\0" * 68)
    return path


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """name -> (path, the reason `ctvlp info` and `ctvlp prepare` give)."""
    root = tmp_path_factory.mktemp("bad_files")
    hu = phantom()
    mixed = classic_series(root / "mixed", hu[:4])
    classic_series(mixed, hu[4:], series="1.2.3.9", first=4)
    volume = phantom(6, 10, 10).astype(np.float32).transpose(2, 1, 0)
    volume[3, 3, 3] = np.nan
    return {
        "mr": (classic_series(root / "mr", hu, modality="MR"), "DICOM Modality is 'MR', not 'CT'"),
        "pet": (classic_series(root / "pet", hu, modality="PT"), "DICOM Modality is 'PT', not 'CT'"),
        "multiframe_without_positions": (enhanced_ct(root / "mf" / "mf.dcm", hu, list(range(8)), groups=False),
                                         "multi-frame image (8 frames) without per-frame positions"),
        "mixed_series": (mixed, "folder mixes 2 series: 1.2.3.4 (4 slices), 1.2.3.9 (4 slices)"),
        "huge_nifti": (huge_nifti(root / "huge.nii"), "30000 x 30000 x 30000 = 27000000 M voxels is over the limit"),
        "huge_dicom": (classic_series(root / "rows", hu[:2], rows_cols=(65535, 65535)),
                       "65535 x 65535 x 2 = 8590 M voxels is over the limit"),
        "zero_pixdim": (nifti(root / "zero.nii.gz", phantom(), zooms=(0.8, 0.8, 0.0), sform=False),
                        "voxel size (pixdim) [0.8, 0.8, 0.0] has a 0"),
        "zero_pixel_spacing": (classic_series(root / "zsp", hu, spacing=(0.0, 0.7)), "PixelSpacing [0.0, 0.7]"),
        "negative_pixel_spacing": (classic_series(root / "nsp", hu, spacing=(0.8, -0.7)), "PixelSpacing [0.8, -0.7]"),
        "nan_voxels": (nifti(root / "nan.nii.gz", volume), "1 voxel(s) are NaN or infinite"),
    }


@pytest.mark.parametrize("name", ["mr", "pet", "multiframe_without_positions", "mixed_series", "huge_nifti",
                                  "huge_dicom", "zero_pixdim", "zero_pixel_spacing", "negative_pixel_spacing"])
def test_info_refuses_each_bad_volume_in_one_line(bad_files, capsys, name):
    path, reason = bad_files[name]
    one_error_line(capsys, ["info", path], reason)


def test_huge_header_is_refused_before_any_allocation(bad_files):
    tracemalloc.start()
    try:
        with pytest.raises(ctvlp.CtvlpError, match="over the limit"):
            ctvlp.load_volume(bad_files["huge_nifti"][0])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20e6, f"{peak / 1e6:.0f} MB allocated while refusing a header"


def test_prepare_skips_and_lists_every_bad_volume(bad_files, data, tmp_path, capsys):
    good = nifti(tmp_path / "good.nii.gz", phantom().transpose(2, 1, 0))
    rows = [{"path": str(path), "id": name, "report": "Normal chest."} for name, (path, _) in bad_files.items()]
    pd.DataFrame([*rows, {"path": str(good), "id": "good", "report": "Normal chest."}]).to_csv(tmp_path / "l.csv",
                                                                                            index=False)
    assert main(["manifest", "generic", str(tmp_path / "l.csv"), "--out", str(tmp_path / "m.parquet")]) == 0
    assert main(["prepare", "--manifest", str(tmp_path / "m.parquet"), "--out", str(tmp_path / "cache")]) == 0
    assert f"prepared 1, already cached 0, failed {len(bad_files)}" in capsys.readouterr().out
    failures = pd.read_csv(tmp_path / "cache" / "failures" / "shard-0-of-1.csv").set_index("id")["reason"]
    for name, (_, reason) in bad_files.items():
        assert reason in failures[name], (name, failures[name])
    assert Cache(tmp_path / "cache").ids == ["good"]


def test_enhanced_multiframe_dicom_reads_as_its_classic_series(tmp_path, run, capsys):
    hu = phantom()
    classic = ctvlp.load_volume(classic_series(tmp_path / "classic", hu))
    path = enhanced_ct(tmp_path / "enhanced" / "ct.dcm", hu, order=[3, 1, 0, 2, 7, 5, 4, 6])  # frames unsorted
    enhanced = ctvlp.load_volume(path)
    assert enhanced.path == str(path) and enhanced.meta["modality"] == "CT"
    np.testing.assert_array_equal(enhanced.array, classic.array)
    np.testing.assert_allclose(enhanced.affine, classic.affine)
    for source in (tmp_path / "classic", path):
        assert main(["zeroshot", str(source), "--checkpoint", str(run), "--json"]) == 0
    first, second = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert first == second


def test_zeroshot_refuses_a_non_ct_modality(bad_files, run, capsys):
    one_error_line(capsys, ["zeroshot", bad_files["mr"][0], "--checkpoint", run], "DICOM Modality is 'MR'")


# ------------------------------------------------------------------------- report files, labels, names


@pytest.fixture
def ctrate_copy(data, tmp_path) -> Path:
    """A copy of the synthetic cohort's CT-RATE tree to spoil."""
    return Path(shutil.copytree(data["cohort"] / "dataset", tmp_path / "ct" / "dataset")).parent


def test_ctrate_reports_in_latin1_are_refused_naming_the_line(ctrate_copy, tmp_path, capsys):
    reports = ctrate_copy / "dataset" / "radiology_text_reports" / "train_reports.csv"
    lines = reports.read_text().splitlines()
    lines[2] = lines[2].replace("Heart", "Cœur épais", 1) if "Heart" in lines[2] else lines[2] + " é"
    reports.write_bytes("\n".join(lines).encode("latin-1", errors="replace") + b"\n")
    one_error_line(capsys, ["manifest", "ctrate", ctrate_copy, "--out", tmp_path / "m.parquet"],
                   str(reports), "not UTF-8 text: byte 0x", "at line 3", "iconv")


def test_ctrate_label_outside_0_1_names_the_column_and_the_volume(ctrate_copy, tmp_path, capsys):
    labels = ctrate_copy / "dataset" / "multi_abnormality_labels" / "train_predicted_labels.csv"
    table = pd.read_csv(labels, dtype=str)
    table.loc[1, "Emphysema"], table.loc[2, "Emphysema"] = "2", "0.5"
    table.to_csv(labels, index=False)
    volumes = [table.loc[i, "VolumeName"].removesuffix(".nii.gz") for i in (1, 2)]
    one_error_line(capsys, ["manifest", "ctrate", ctrate_copy, "--out", tmp_path / "m.parquet"],
                   "label column 'Emphysema' has values other than 0/1/blank: ['0.5', '2'] in 2 row(s)", *volumes)


def test_ctrate_empty_report_and_a_name_in_two_folders_are_skipped_and_listed(ctrate_copy, tmp_path, capsys):
    reports = ctrate_copy / "dataset" / "radiology_text_reports" / "train_reports.csv"
    table = pd.read_csv(reports, dtype=str)
    table.loc[0, ["Findings_EN", "Impressions_EN"]] = ""
    table.to_csv(reports, index=False)
    empty = table.loc[0, "VolumeName"].removesuffix(".nii.gz")
    original = next(p for p in sorted((ctrate_copy / "dataset" / "train").rglob("*.nii.gz")) if empty not in p.name)
    name = original.name.removesuffix(".nii.gz")
    copy = ctrate_copy / "dataset" / "train" / "backup" / original.name
    copy.parent.mkdir()
    shutil.copy(original, copy)
    assert main(["manifest", "ctrate", str(ctrate_copy), "--out", str(tmp_path / "m.parquet")]) == 0
    skipped = pd.read_csv(tmp_path / "m.skipped.csv")
    ids = Manifest.load(tmp_path / "m.parquet").df["id"].tolist()
    assert empty not in ids and name not in ids and len(ids) == 12 - 2
    reasons = dict(zip(skipped["name"], skipped["reason"]))
    assert reasons[str(original)].startswith(f"volume name {name} is in 2 places") and str(copy) in reasons
    assert any(r.startswith("empty report") for n, r in reasons.items() if empty in n)


def test_generic_rows_with_bad_bytes_labels_or_ids_are_skipped_and_listed(tmp_path, capsys):
    scan = nifti(tmp_path / "scan.nii.gz", phantom().transpose(2, 1, 0))
    lines = [json.dumps({"path": scan.name, "id": "ok", "report": "Normal."}).encode(),
             b'{"path": "scan.nii.gz", "id": "latin", "report": "C\xe9ur"}']
    (tmp_path / "l.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    assert main(["manifest", "generic", str(tmp_path / "l.jsonl"), "--out", str(tmp_path / "j.parquet")]) == 0
    assert Manifest.load(tmp_path / "j.parquet").df["id"].tolist() == ["ok"]
    assert pd.read_csv(tmp_path / "j.skipped.csv")["reason"].tolist() == ["line 2: not UTF-8 text: byte 0xe9"]
    values = {"two": "2", "minus": "-1", "half": "0.5", "yes": "yes", "blank": ""}
    escaping = ["../../evil", "/abs/x", "a/b", ".", ".tmp-1"]
    rows = [{"path": scan.name, "id": k, "report": "Normal.", "label:Emphysema": v} for k, v in values.items()]
    rows += [{"path": scan.name, "id": vid, "report": "Normal.", "label:Emphysema": "0"} for vid in escaping]
    rows.append({"path": scan.name, "id": "yes", "report": "Again.", "label:Emphysema": "1"})
    pd.DataFrame(rows).to_csv(tmp_path / "l.csv", index=False)
    assert main(["manifest", "generic", str(tmp_path / "l.csv"), "--out", str(tmp_path / "m.parquet")]) == 0
    df = Manifest.load(tmp_path / "m.parquet").df.set_index("id")
    assert df.index.tolist() == ["yes", "blank"]
    assert df.loc["yes", "label:Emphysema"] == 1 and pd.isna(df.loc["blank", "label:Emphysema"])
    skipped = pd.read_csv(tmp_path / "m.skipped.csv")["reason"].tolist()
    assert skipped[:3] == [f"label value(s) other than 0/1/yes/no/true/false/blank: label:Emphysema={v!r}"
                           for v in ("2", "-1", "0.5")]
    assert all(f"id {vid!r} is not a plain file name" in r for vid, r in zip(escaping, skipped[3:8], strict=True))
    assert skipped[8:] == ["duplicate id 'yes' (give each row an `id`)"]


def test_manifest_and_index_ids_cannot_write_outside_the_cache(data, tmp_path, capsys):
    """A hand-made manifest or a cache index with ids that are paths: refused, nothing written outside."""
    scan = str(nifti(tmp_path / "scan.nii.gz", phantom().transpose(2, 1, 0)))
    work = tmp_path / "work"
    manifest = work / "manifest.csv"
    manifest.parent.mkdir()
    pd.DataFrame({"id": ["ok", "../../evil", "/abs/x", "a/b", "."], "split": "train", "path": scan}).to_csv(
        manifest, index=False)
    before = sorted(p for p in tmp_path.rglob("*"))
    one_error_line(capsys, ["prepare", "--manifest", manifest, "--out", work / "cache"],
                   "4 volume id(s) are not plain file names", "'../../evil'", "'/abs/x'", "'a/b'", "'.'")
    assert sorted(p for p in tmp_path.rglob("*")) == before and not Path("/abs/x").exists()
    cache = Path(shutil.copytree(data["cache"], work / "cache2"))
    shard = next((cache / "index").glob("*.parquet"))
    index = pd.read_parquet(shard)
    index.loc[0, "id"] = "../../evil"
    index.to_parquet(shard)
    one_error_line(capsys, ["train", "--recipe", "demo", "--debug", "--data", cache, "--out", work / "run",
                            "--no-progress"], "not plain file names: ['../../evil']")
    assert not (work / "run").exists()


def test_segment_prompts_name_files_inside_the_out_folder(tmp_path):
    out = tmp_path / "maps" / "heat.nii.gz"
    paths = output_paths(out, ["../../x", "a/b", ".", "..", "aorta"])
    assert all(p.parent == out.parent for p in paths.values()) and len(set(paths.values())) == 5
    assert paths["aorta"].name == "heat_aorta.nii.gz" and paths["../../x"].name == "heat_.._.._x.nii.gz"
