"""`ctvlp info`: facts checked against nibabel / pydicom read independently; bad input is exit 2 and one line."""

import json
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pydicom
import pytest

from ctvlp.cli import main

NIFTI_FILES = {"abdomen_ct_3mm_30slices.nii.gz": 30, "chest_ct_angio_1p5mm.nii.gz": 164}  # slices (README)
SERIES = "dicom_ct_series"
MIXED_UIDS = ["1.2.826.0.1.3680043.9.1", "1.2.826.0.1.3680043.9.2"]


def run_info(capsys, *argv) -> tuple[int, str, str]:
    code = main(["info", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def info_json(capsys, *argv) -> dict:
    code, out, err = run_info(capsys, *argv, "--json")
    assert code == 0 and err == "", err
    return json.loads(out)


def assert_one_error_line(err: str, path) -> None:
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1, err
    assert lines[0].startswith("ctvlp info: error: ") and str(path) in lines[0]
    assert "Traceback" not in err


def nifti_facts(path) -> dict:
    """What `info` must say about a NIfTI, computed with nibabel and numpy alone."""
    img = nib.load(path)
    hu = img.get_fdata(dtype=np.float64)
    p1, p99 = np.percentile(hu, [1, 99])
    return {"shape": list(img.shape), "spacing_mm": [float(z) for z in img.header.get_zooms()],
            "orientation": "".join(nib.aff2axcodes(img.affine)), "hu_min": hu.min(), "hu_max": hu.max(),
            "hu_p1": p1, "hu_p99": p99, "origin_mm": img.affine[:3, 3]}


@pytest.fixture(scope="module")
def dicom_facts(real_dir) -> dict:
    """What `info` must say about the DICOM series, from pydicom headers and pixels (decoded once)."""
    datasets = [pydicom.dcmread(f) for f in sorted((real_dir / SERIES).iterdir())]
    z = np.sort([float(ds.ImagePositionPatient[2]) for ds in datasets])
    hu = [ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in datasets]
    first = datasets[0]
    return {"shape": [int(first.Columns), int(first.Rows), len(datasets)],
            "spacing_mm": [float(first.PixelSpacing[1]), float(first.PixelSpacing[0]), float(np.diff(z).mean())],
            "hu_min": min(h.min() for h in hu), "hu_max": max(h.max() for h in hu), "slices": len(datasets)}


@pytest.fixture(scope="module")
def dicom_info(real_dir) -> dict:
    """`ctvlp info --json` on the DICOM series, run once."""
    proc = subprocess.run([sys.executable, "-m", "ctvlp", "info", str(real_dir / SERIES), "--json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.parametrize("name", NIFTI_FILES)
def test_json_facts_match_nibabel(real_dir, capsys, name):
    got = info_json(capsys, real_dir / name)
    want = nifti_facts(real_dir / name)
    assert got["path"] == str(real_dir / name) and got["format"] == "nifti" and got["dtype"] == "int16"
    assert got["shape"] == want["shape"] and got["orientation"] == want["orientation"]
    assert got["slices"] == NIFTI_FILES[name]
    np.testing.assert_allclose(got["spacing_mm"], want["spacing_mm"], atol=1e-4)
    assert (got["hu_min"], got["hu_max"]) == (want["hu_min"], want["hu_max"])
    np.testing.assert_allclose([got["hu_p1"], got["hu_p99"]], [want["hu_p1"], want["hu_p99"]], atol=0.05)
    np.testing.assert_allclose(got["origin_mm"], want["origin_mm"], atol=1e-3)


def test_readme_geometry_of_the_real_files(real_dir, capsys):
    chest = info_json(capsys, real_dir / "chest_ct_angio_1p5mm.nii.gz")
    abdomen = info_json(capsys, real_dir / "abdomen_ct_3mm_30slices.nii.gz")
    assert (chest["shape"], chest["spacing_mm"], chest["orientation"]) == ([120, 126, 164], [1.5] * 3, "LPS")
    assert (abdomen["shape"], abdomen["spacing_mm"], abdomen["orientation"]) == ([122, 101, 30], [3.0] * 3, "RAS")


def test_text_table_shows_the_same_facts(real_dir, capsys):
    path = real_dir / "abdomen_ct_3mm_30slices.nii.gz"
    facts = info_json(capsys, path)
    code, out, err = run_info(capsys, path)
    assert code == 0 and err == ""
    table = dict(line.split(None, 1) for line in out.strip().splitlines())
    for key in ["shape", "spacing_mm", "orientation", "slices", "hu_min", "hu_max", "hu_p1", "hu_p99"]:
        assert table[key] == str(facts[key]), key
    assert table["shape"] == "[122, 101, 30]" and table["orientation"] == "RAS" and table["slices"] == "30"


def test_dicom_series_facts_match_pydicom(dicom_info, dicom_facts, real_dir):
    assert dicom_info["path"] == str(real_dir / SERIES) and dicom_info["format"] == "dicom"
    assert dicom_info["shape"] == dicom_facts["shape"] == [512, 512, 20]
    np.testing.assert_allclose(dicom_info["spacing_mm"], dicom_facts["spacing_mm"], atol=1e-4)
    assert dicom_info["spacing_mm"][2] == 2.0  # from the positions, not SliceThickness (3 mm)
    assert dicom_info["orientation"] == "LPS"  # IOP rows +x (L), columns +y (P), normal +z (S) in LPS
    assert dicom_info["slices"] == dicom_facts["slices"]
    assert (dicom_info["hu_min"], dicom_info["hu_max"]) == (dicom_facts["hu_min"], dicom_facts["hu_max"])


def test_series_uid_option_on_a_mixed_folder(real_dir, tmp_path, capsys):
    files = sorted((real_dir / SERIES).iterdir())
    folder = tmp_path / "mixed"
    folder.mkdir()
    for f in files:
        ds = pydicom.dcmread(f)
        ds.SeriesInstanceUID = MIXED_UIDS[float(ds.ImagePositionPatient[2]) > -785]  # 10 slices each
        ds.save_as(folder / f.name)
    code, out, err = run_info(capsys, folder)
    assert code == 2 and out == ""
    assert_one_error_line(err, folder)
    assert all(f"{uid} (10 slices)" in err for uid in MIXED_UIDS)
    got = info_json(capsys, folder, "--series-uid", MIXED_UIDS[1])
    assert got["shape"] == [512, 512, 10] and got["slices"] == 10 and got["spacing_mm"][2] == 2.0


def _truncated_gz(real_dir, tmp_path):
    data = (real_dir / "abdomen_ct_3mm_30slices.nii.gz").read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(data[: len(data) // 2])
    return tmp_path / "cut.nii.gz"


def _empty(real_dir, tmp_path):
    (tmp_path / "empty.nii.gz").write_bytes(b"")
    return tmp_path / "empty.nii.gz"


def _mr_like(real_dir, tmp_path):
    mr = np.random.default_rng(0).gamma(2.0, 300.0, (12, 12, 12)).astype(np.int16)
    nib.save(nib.Nifti1Image(mr, np.eye(4)), tmp_path / "t1.nii.gz")
    return tmp_path / "t1.nii.gz"


def _nan(real_dir, tmp_path):
    array = np.full((5, 5, 5), -1000.0, np.float32)
    array[2, 2, 2] = np.nan
    nib.save(nib.Nifti1Image(array, np.eye(4)), tmp_path / "nan.nii.gz")
    return tmp_path / "nan.nii.gz"


def _zero_axis(real_dir, tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((5, 0, 5), np.int16), np.eye(4)), tmp_path / "zero.nii.gz")
    return tmp_path / "zero.nii.gz"


def _no_dicom(real_dir, tmp_path):
    (tmp_path / "notes.txt").write_text("no scans here")
    return tmp_path


def _missing(real_dir, tmp_path):
    return tmp_path / "nope.nii.gz"


def _unknown_suffix(real_dir, tmp_path):
    (tmp_path / "scan.png").write_bytes(bytes(300))
    return tmp_path / "scan.png"


def _truncated_slice(real_dir, tmp_path):
    """The real series with one slice's pixel data cut (pydicom also warns while reading it)."""
    folder = tmp_path / "series"
    shutil.copytree(real_dir / SERIES, folder)
    victim = sorted(folder.iterdir())[9]
    victim.write_bytes(victim.read_bytes()[:5000])
    return folder


BAD_INPUTS = {"truncated": (_truncated_gz, "cannot read NIfTI"), "empty": (_empty, "empty file"),
              "mr": (_mr_like, "do not look like CT"), "nan": (_nan, "NaN"),
              "zero_axis": (_zero_axis, "zero-size axis"), "no_dicom": (_no_dicom, "no DICOM image slices"),
              "missing": (_missing, "no such file"), "suffix": (_unknown_suffix, "unknown volume format")}


@pytest.mark.parametrize("kind", BAD_INPUTS)
def test_bad_input_is_exit_2_and_one_line(real_dir, tmp_path, capsys, kind):
    build, reason = BAD_INPUTS[kind]
    path = build(real_dir, tmp_path)
    code, out, err = run_info(capsys, path)
    assert code == 2 and out == ""
    assert_one_error_line(err, path)
    assert reason in err


def test_no_ct_check_describes_masks_and_mr(real_dir, tmp_path, capsys):
    mask = real_dir / "chest_ct_angio_1p5mm_aorta_mask.nii.gz"
    code, _, err = run_info(capsys, mask)
    assert code == 2 and "do not look like CT" in err
    got = info_json(capsys, mask, "--no-ct-check")
    assert (got["hu_min"], got["hu_max"], got["shape"]) == (0.0, 1.0, [120, 126, 164])
    mr = _mr_like(real_dir, tmp_path)
    got = info_json(capsys, mr, "--no-ct-check")
    assert got["hu_max"] == float(np.asarray(nib.load(mr).dataobj).max())


@pytest.mark.parametrize("build", [_truncated_gz, _truncated_slice])
def test_subprocess_exit_code_and_single_stderr_line(real_dir, tmp_path, build):
    path = build(real_dir, tmp_path)
    proc = subprocess.run([sys.executable, "-m", "ctvlp", "info", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert_one_error_line(proc.stderr, path)
