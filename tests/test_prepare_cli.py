"""`ctvlp prepare` end to end on small NIfTI volumes written here: results, resume, failures, shards."""

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from ctvlp.cli import main
from ctvlp.data.cache import Cache
from ctvlp.data.manifest import Manifest


def _phantom(shape=(40, 36, 12), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    hu = np.full(shape, -1000, np.int16)
    hu[(x / 0.8) ** 2 + (y / 0.7) ** 2 < 1] = 40
    hu[((x - 0.3) / 0.25) ** 2 + (y / 0.3) ** 2 < 1] = -850  # a lung
    return (hu + rng.integers(-5, 5, shape)).astype(np.int16)


@pytest.fixture
def dataset(tmp_path):
    rows = []
    affine = np.diag([-0.8, -0.8, 2.5, 1.0])  # LPS, like many CT exports
    for k in range(4):
        path = tmp_path / f"v{k}.nii.gz"
        nib.save(nib.Nifti1Image(_phantom(seed=k), affine), path)
        rows.append({"id": f"v{k}", "split": "train", "path": str(path), "findings": "Lungs are clear."})
    lung = (_phantom() == _phantom()) & (_phantom() < -500)
    nib.save(nib.Nifti1Image(lung.astype(np.uint8), affine), tmp_path / "v0_lung.nii.gz")
    rows[0]["masks"] = json.dumps({"lung": str(tmp_path / "v0_lung.nii.gz")})
    (tmp_path / "broken.nii.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    rows.append({"id": "broken", "split": "train", "path": str(tmp_path / "broken.nii.gz")})
    rows.append({"id": "missing", "split": "train", "path": str(tmp_path / "nope.nii.gz")})
    mr = (np.random.default_rng(1).random((20, 20, 8)) * 900).astype(np.int16)
    nib.save(nib.Nifti1Image(mr, np.eye(4)), tmp_path / "mr.nii.gz")
    rows.append({"id": "mr", "split": "train", "path": str(tmp_path / "mr.nii.gz")})
    m = tmp_path / "manifest.parquet"
    Manifest(pd.DataFrame(rows)).save(m)
    return tmp_path, m


def test_prepare_writes_cache_and_lists_failures(dataset, capsys):
    tmp, manifest = dataset
    assert main(["prepare", "--manifest", str(manifest), "--out", str(tmp / "c"), "--spacing", "1.6,1.6,2.5"]) == 0
    out = capsys.readouterr().out
    assert "prepared 4, already cached 0, failed 3 of 7" in out
    failures = pd.read_csv(tmp / "c" / "failures" / "shard-0-of-1.csv")
    reasons = dict(zip(failures["id"], failures["reason"]))
    assert set(reasons) == {"broken", "missing", "mr"}
    assert "no such file" in reasons["missing"] and "CT" in reasons["mr"] and "NIfTI" in reasons["broken"]
    cache = Cache(tmp / "c")
    assert sorted(cache.ids) == ["v0", "v1", "v2", "v3"]
    vol = cache.volume("v0")
    assert vol.mask_names == ["body", "lung"]
    np.testing.assert_allclose(vol.spacing_zyx, [2.5, 1.6, 1.6])
    assert vol.shape[0] == 12  # z spacing unchanged, z extent kept
    assert vol.affine_zyx[2, 0] > 0 and vol.affine_zyx[1, 1] > 0 and vol.affine_zyx[0, 2] > 0  # RAS, z-first
    body, lung = vol.mask_slab(0, vol.shape[0], ["body", "lung"])
    hu = vol.slab(0, vol.shape[0])
    assert (hu[lung] < -700).mean() > 0.9  # the mask still covers low-density voxels after resampling
    assert (hu[body & ~lung] > -200).mean() > 0.9


def test_prepare_resumes_and_refuses_other_config(dataset, capsys):
    tmp, manifest = dataset
    args = ["prepare", "--manifest", str(manifest), "--out", str(tmp / "c")]
    assert main(args + ["--limit", "2"]) == 0
    assert main(args) == 0
    assert "prepared 2, already cached 2, failed 3" in capsys.readouterr().out
    assert main(args + ["--spacing", "2,2,2"]) == 2
    assert "cache was prepared with" in capsys.readouterr().err
    assert len(Cache(tmp / "c")) == 4


def test_prepare_shards_cover_the_manifest(dataset):
    tmp, manifest = dataset
    for i in range(2):
        assert main(["prepare", "--manifest", str(manifest), "--out", str(tmp / "c"), "--shard", f"{i}/2"]) == 0
    assert sorted(Cache(tmp / "c").ids) == ["v0", "v1", "v2", "v3"]
    assert len(list((tmp / "c" / "index").glob("*.parquet"))) == 2


def test_killed_prepare_leaves_no_half_volume(dataset):
    tmp, manifest = dataset
    code = ("import sys, os; import ctvlp.data.cache as c; orig = c.np.save\n"
            "def boom(path, arr):\n"
            "    orig(path, arr)\n"
            "    if str(path).endswith('image.npy') and 'v1' in str(path): os._exit(9)\n"
            "c.np.save = boom\n"
            "from ctvlp.cli import main; sys.exit(main(sys.argv[1:]))")
    args = ["prepare", "--manifest", str(manifest), "--out", str(tmp / "c")]
    assert subprocess.run([sys.executable, "-c", code, *args]).returncode == 9
    volumes = tmp / "c" / "volumes"
    assert (volumes / "v0" / "meta.json").is_file() and not (volumes / "v1").exists()
    assert main(args) == 0
    assert (volumes / "v1" / "meta.json").is_file()
    assert not list(volumes.glob(".v*.tmp"))


def test_bad_manifest_is_exit_2(tmp_path, capsys):
    assert main(["prepare", "--manifest", str(tmp_path / "none.parquet"), "--out", str(tmp_path / "c")]) == 2
    assert "manifest file not found" in capsys.readouterr().err
