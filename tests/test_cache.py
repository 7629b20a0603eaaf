"""The chunk cache: writer/reader round trip, packed masks vs plain arrays, atomic writes, prepare API."""

import json
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from ctvlp.data import cache as cache_mod
from ctvlp.data.cache import Cache, CachedVolume, write_cached_volume, z_extents
from ctvlp.data.manifest import Manifest
from ctvlp.data.prepare import prepare
from ctvlp.data.preprocess import PreprocessConfig
from ctvlp.errors import BadDatasetError, WriteError
from ctvlp.fsutil import remove_stale_temps

AFFINE_ZYX = np.array([[0, 0, 1.5, -90], [0, 1.5, 0, -60], [3.0, 0, 0, 100], [0, 0, 0, 1]])


def _volume(shape=(9, 7, 13), seed=0):
    rng = np.random.default_rng(seed)
    image = rng.integers(-1024, 2000, shape).astype(np.int16)  # (Z, Y, X); X not a multiple of 8
    masks = {"body": image > -500, "liver": np.zeros(shape, bool), "empty": np.zeros(shape, bool)}
    masks["liver"][3:6, 2:5, 4:11] = True
    return image, masks


def test_round_trip_and_slabs(tmp_path):
    image, masks = _volume()
    directory = write_cached_volume(tmp_path, "a", image, AFFINE_ZYX, masks, {"source_path": "x.nii"})
    vol = CachedVolume(directory)
    assert vol.vid == "a" and vol.shape == (9, 7, 13) and vol.mask_names == ["body", "liver", "empty"]
    np.testing.assert_allclose(vol.spacing_zyx, [3.0, 1.5, 1.5])
    np.testing.assert_array_equal(vol.affine_zyx, AFFINE_ZYX)
    assert vol.z_extents == {"body": (0, 9), "liver": (3, 6)}  # empty masks have no extent
    assert vol.meta["source_path"] == "x.nii"
    slab = vol.slab(2, 5)
    assert slab.dtype == np.int16 and not isinstance(slab, np.memmap)
    np.testing.assert_array_equal(slab, image[2:5])
    assert isinstance(vol._arrays()[0], np.memmap)  # slabs come from a memory map
    every = vol.mask_slab(2, 7)
    assert every.dtype == bool and every.shape == (3, 5, 7, 13)
    np.testing.assert_array_equal(every, np.stack([m[2:7] for m in masks.values()]))
    np.testing.assert_array_equal(vol.mask_slab(0, 9, ["liver", "body"]), np.stack([masks["liver"], masks["body"]]))
    with pytest.raises(KeyError, match="lung"):
        vol.mask_slab(0, 1, ["lung"])
    whole = vol.to_volume()
    np.testing.assert_array_equal(whole.array, image)
    np.testing.assert_allclose(whole.index_to_world([[4, 3, 6]])[0], [-81, -55.5, 112])


def test_masks_are_packed_along_x(tmp_path):
    image, masks = _volume()
    directory = write_cached_volume(tmp_path, "a", image, AFFINE_ZYX, masks)
    packed = np.load(directory / "masks.npy")
    assert packed.dtype == np.uint8 and packed.shape == (9, 3, 7, 2)  # (Z, M, Y, ceil(13 / 8))
    assert np.load(directory / "image.npy").shape == (9, 7, 13)


def test_z_extents_golden():
    m = np.zeros((6, 2, 2), bool)
    m[1, 0, 0] = m[3, 1, 1] = True
    assert z_extents({"a": m, "b": np.zeros_like(m)}) == {"a": [1, 4]}


def test_crash_while_writing_leaves_nothing(tmp_path, monkeypatch):
    image, masks = _volume()
    real_save = np.save

    def failing_save(path, arr):
        if str(path).endswith("masks.npy"):
            raise OSError(28, "No space left on device")
        real_save(path, arr)

    monkeypatch.setattr(cache_mod.np, "save", failing_save)
    with pytest.raises(WriteError, match=r"volumes/a: cannot write \(No space left on device\)"):
        write_cached_volume(tmp_path, "a", image, AFFINE_ZYX, masks)
    assert not list((tmp_path / "volumes").iterdir())  # no volume, no temporary directory


def test_existing_volume_is_kept(tmp_path):
    image, masks = _volume()
    write_cached_volume(tmp_path, "a", image, AFFINE_ZYX, masks)
    write_cached_volume(tmp_path, "a", image + 1, AFFINE_ZYX, masks)  # a second writer loses the race
    np.testing.assert_array_equal(CachedVolume(tmp_path / "volumes" / "a").slab(0, 9), image)
    assert sorted(p.name for p in (tmp_path / "volumes").iterdir()) == ["a"]


def test_stale_temp_dirs_are_removed(tmp_path):
    dead, live = 99_999_999, os.getppid()  # above any pid_max; the process that started this one
    for name in (f".a.{dead}-0000beef.tmp", f".ab.{dead}-0000beef.tmp", f".a.{live}-0000beef.tmp"):
        (tmp_path / "volumes" / name).mkdir(parents=True)
    assert remove_stale_temps(tmp_path / "volumes", ["a"]) == 1  # a live writer's temporary is kept
    assert sorted(p.name for p in (tmp_path / "volumes").iterdir()) == [f".a.{live}-0000beef.tmp",
                                                                      f".ab.{dead}-0000beef.tmp"]


def test_cache_errors(tmp_path):
    with pytest.raises(BadDatasetError, match="not a ctvlp cache"):
        Cache(tmp_path)
    (tmp_path / "preprocessing.json").write_text(json.dumps({"preprocess": PreprocessConfig().to_dict()}))
    with pytest.raises(BadDatasetError, match="no index"):
        Cache(tmp_path)
    (tmp_path / "index").mkdir()
    pd.DataFrame().to_parquet(tmp_path / "index" / "shard-0-of-1.parquet")
    with pytest.raises(BadDatasetError, match="lists no volume"):
        Cache(tmp_path)
    with pytest.raises(BadDatasetError, match="not a cached volume"):
        CachedVolume(tmp_path / "volumes" / "nope")


def _ct(shape=(30, 26, 10), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x, y = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    hu = np.full(shape, -1000, np.int16)
    hu[(x / 0.8) ** 2 + (y / 0.7) ** 2 < 1] = 40
    return (hu + rng.integers(-5, 5, shape)).astype(np.int16)


@pytest.fixture
def small_dataset(tmp_path):
    """Two good CTs (one with a label map), a NaN volume, a non-numeric label and a mask on another grid."""
    affine = np.diag([-1.2, -1.2, 2.5, 1.0])
    labels = np.zeros((30, 26, 10), np.uint8)
    labels[10:20, 10:16, 2:7] = 5
    labels[5:8, 5:8, 1:3] = 2
    nib.save(nib.Nifti1Image(labels, affine), tmp_path / "seg.nii.gz")
    rows = []
    for k in range(2):
        nib.save(nib.Nifti1Image(_ct(seed=k), affine), tmp_path / f"ct{k}.nii.gz")
        rows.append({"id": f"ct{k}", "split": "train", "path": str(tmp_path / f"ct{k}.nii.gz")})
    rows[0]["masks"] = json.dumps({"liver": f"{tmp_path / 'seg.nii.gz'}#5", "any": str(tmp_path / "seg.nii.gz")})
    nan = _ct().astype(np.float32)
    nan[3, 3, 3] = np.nan
    nib.save(nib.Nifti1Image(nan, affine), tmp_path / "nan.nii.gz")
    rows.append({"id": "withnan", "split": "train", "path": str(tmp_path / "nan.nii.gz")})
    rows.append({**rows[1], "id": "badlabel", "masks": json.dumps({"liver": f"{tmp_path / 'seg.nii.gz'}#liver"})})
    nib.save(nib.Nifti1Image(labels[:, :, :9], affine), tmp_path / "short.nii.gz")
    rows.append({**rows[1], "id": "othergrid", "masks": json.dumps({"liver": str(tmp_path / "short.nii.gz")})})
    return tmp_path, Manifest(pd.DataFrame(rows))


def test_prepare_with_workers_label_values_and_bad_rows(small_dataset):
    tmp, manifest = small_dataset
    config = PreprocessConfig(spacing=(1.2, 1.2, 2.5), crop_to_body=False)
    report = prepare(manifest, tmp / "c", config, workers=2)
    assert report.done == 2 and report.cached == 0
    reasons = {f["id"]: f["reason"] for f in report.failed}
    assert set(reasons) == {"withnan", "badlabel", "othergrid"}
    assert "NaN" in reasons["withnan"] and "not a number" in reasons["badlabel"] and "grid" in reasons["othergrid"]
    vol = Cache(tmp / "c").volume("ct0")
    liver, any_label = vol.mask_slab(0, vol.shape[0], ["liver", "any"])
    assert liver.sum() == 10 * 6 * 5 and any_label.sum() == 10 * 6 * 5 + 3 * 3 * 2  # same grid, RAS flip only
    assert vol.z_extents["liver"] == (2, 7)
    failures = pd.read_csv(report.failures_path)
    assert sorted(failures["id"]) == ["badlabel", "othergrid", "withnan"]
    again = prepare(manifest, tmp / "c", config, workers=2)
    assert (again.done, again.cached, len(again.failed)) == (0, 2, 3)


def test_killed_run_resumes_without_leftovers(small_dataset):
    tmp, manifest = small_dataset
    manifest.save(tmp / "m.parquet")
    code = ("import os, sys, numpy as np; import ctvlp.data.cache as c; save = np.save\n"
            "def die(path, arr):\n"
            "    save(path, arr)\n"
            "    if 'ct1' in str(path): os.kill(os.getpid(), 9)\n"
            "c.np.save = die\n"
            "from ctvlp.cli import main; sys.exit(main(sys.argv[1:]))")
    args = ["prepare", "--manifest", str(tmp / "m.parquet"), "--out", str(tmp / "c")]
    assert subprocess.run([sys.executable, "-c", code, *args], capture_output=True).returncode == -9
    volumes = tmp / "c" / "volumes"
    assert (volumes / "ct0" / "meta.json").is_file() and not (volumes / "ct1").exists()
    assert list(volumes.glob(".ct1.*.tmp"))  # the killed run's half volume sits in its temp dir
    run = subprocess.run([sys.executable, "-m", "ctvlp", *args], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "prepared 1, already cached 1, failed 3 of 5" in run.stdout
    assert sorted(p.name for p in volumes.iterdir()) == ["ct0", "ct1"]
    assert os.path.getsize(volumes / "ct1" / "image.npy") > 0
