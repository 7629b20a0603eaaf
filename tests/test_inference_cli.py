"""`ctvlp zeroshot / segment / generate / export` on a debug checkpoint, and bad input -> exit code 2."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

import ctvlp
from ctvlp.cli import main
from ctvlp.config import apply_overrides
from ctvlp.models.store import load_checkpoint
from ctvlp.recipes import get_recipe
from ctvlp.train.checkpoint import save_checkpoint
from ctvlp.train.loop import Trainer
from conftest import make_synthetic_cache

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("inference_cli")
    cache = make_synthetic_cache(root, 12, 5)
    out = {"volume": str(root / "cohort" / "dataset" / "valid" / "valid_1" / "valid_1_a" / "valid_1_a_1.nii.gz")}
    for recipe in ("demo", "segvl", "colipri"):
        Trainer(apply_overrides(get_recipe(recipe, debug=True), ["steps=1"]), cache, root / recipe, progress=False).fit()
        out[recipe] = str(root / recipe)
    return out


def test_zeroshot_table_and_json(runs, capsys):
    assert main(["zeroshot", runs["volume"], "--checkpoint", runs["demo"], "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    expected = ctvlp.load_model(runs["demo"]).zero_shot(runs["volume"])
    assert printed == {"labels": expected}
    assert main(["zeroshot", runs["volume"], "--checkpoint", runs["demo"], "--labels", "Emphysema", "Cardiomegaly",
                 "--device", "cpu"]) == 0
    rows = [line.rsplit(None, 1) for line in capsys.readouterr().out.splitlines()]
    assert [name for name, _ in rows] == sorted(["Emphysema", "Cardiomegaly"], key=lambda n: -expected[n])
    assert [float(p) for _, p in rows] == [round(expected[n], 3) for n, _ in rows]


def test_zeroshot_reads_a_real_dicom_series(runs, real_dir, capsys):
    series = real_dir / "dicom_ct_series"
    assert main(["zeroshot", str(series), "--checkpoint", runs["demo"], "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)["labels"]
    assert printed == ctvlp.load_model(runs["demo"]).zero_shot(ctvlp.load_volume(series))
    assert all(0 < p < 1 for p in printed.values())


def test_segment_writes_maps_on_the_input_grid(runs, tmp_path, capsys):
    one = tmp_path / "heat.nii.gz"
    assert main(["segment", runs["volume"], "--checkpoint", runs["segvl"], "--prompt", "aorta", "--out", str(one),
                 "--device", "cpu"]) == 0
    source = nib.load(runs["volume"])
    heat = nib.load(one)
    assert heat.shape == source.shape and np.allclose(heat.affine, source.affine)
    expected = ctvlp.load_model(runs["segvl"]).segment(runs["volume"], ["aorta"])["aorta"].array
    np.testing.assert_array_equal(heat.get_fdata(dtype=np.float32), expected)
    assert main(["segment", runs["volume"], "--checkpoint", runs["segvl"], "--prompt", "aorta", "--prompt", "left lung",
                 "--out", str(tmp_path / "many.nii.gz")]) == 0
    assert {p.name for p in tmp_path.glob("many_*")} == {"many_aorta.nii.gz", "many_left_lung.nii.gz"}


def test_export_then_zeroshot_from_the_folder(runs, tmp_path, capsys):
    assert main(["export", runs["segvl"], "--out", str(tmp_path / "model")]) == 0
    capsys.readouterr()
    for source in (runs["segvl"], str(tmp_path / "model")):
        assert main(["zeroshot", runs["volume"], "--checkpoint", source, "--json"]) == 0
    first, second = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert first == second


def test_generate_prints_the_models_report_greedy_and_beam(runs, capsys):
    model = ctvlp.load_model(runs["colipri"])
    for extra, kwargs in (([], {}), (["--beam", "2"], {"beam": 2})):
        assert main(["generate", runs["volume"], "--checkpoint", runs["colipri"], "--max-new-tokens", "8", "--device",
                     "cpu", *extra]) == 0
        printed = capsys.readouterr().out
        assert printed.strip() and printed == model.generate_report(runs["volume"], max_new_tokens=8, **kwargs) + "\n"
    expect_error(capsys, ["generate", runs["volume"], "--checkpoint", runs["colipri"], "--beam", "0"],
                 "beam must be at least 1")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_puts_model_and_inputs_on_the_gpu_and_gives_the_cpus_numbers(runs, tmp_path, capsys):
    """--device cuda, and auto (which picks it), run every tensor on the GPU (a tensor left behind fails
    the first matmul) and give the CPU's scores up to float rounding (cuDNN's TF32 convolutions)."""
    assert all(p.is_cuda for p in ctvlp.load_model(runs["demo"], device="cuda").model.parameters())
    for device in ("cpu", "cuda", "auto"):
        assert main(["zeroshot", runs["volume"], "--checkpoint", runs["demo"], "--json", "--device", device]) == 0
    cpu, cuda, auto = (json.loads(line)["labels"] for line in capsys.readouterr().out.splitlines())
    assert cuda == auto and cuda.keys() == cpu.keys()
    np.testing.assert_allclose(list(cuda.values()), list(cpu.values()), rtol=0, atol=5e-3)
    maps = {}
    for device in ("cpu", "cuda"):
        out = tmp_path / f"{device}.nii.gz"
        assert main(["segment", runs["volume"], "--checkpoint", runs["segvl"], "--prompt", "aorta", "--out", str(out),
                     "--device", device]) == 0
        maps[device] = nib.load(out).get_fdata(dtype=np.float32)
    np.testing.assert_allclose(maps["cuda"], maps["cpu"], rtol=0, atol=5e-3)
    capsys.readouterr()
    for device in ("cpu", "cuda"):
        assert main(["generate", runs["volume"], "--checkpoint", runs["colipri"], "--max-new-tokens", "8",
                     "--device", device]) == 0
    reports = capsys.readouterr().out.splitlines()
    assert len(reports) == 2 and reports[0].strip() and reports[0] == reports[1]


def nifti(path, array, zooms=(1.0, 1.0, 2.0)):
    nib.save(nib.Nifti1Image(array, np.diag([*zooms, 1.0])), str(path))
    return str(path)


def header_only(path, shape):
    """A .nii whose header declares ``shape`` int16 voxels and holds none: reading it fails, so refusing it
    with the size shows the check ran on the header alone."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.int16)
    header.set_qform(np.eye(4), code=1)
    with open(path, "wb") as f:
        header.write_to(f)
        f.write(b"\0" * 4)
    return str(path)


def expect_error(capsys, argv, *needles):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and all(n in err for n in needles), err


def test_bad_input_is_one_line_and_exit_code_2(runs, tmp_path, capsys, monkeypatch):
    demo, segvl, volume = runs["demo"], runs["segvl"], runs["volume"]
    rng = np.random.default_rng(0)
    mr = nifti(tmp_path / "mr.nii.gz", rng.integers(0, 800, (32, 32, 16)).astype(np.int16))
    expect_error(capsys, ["zeroshot", mr, "--checkpoint", demo], "mr.nii.gz", "do not look like CT")
    one = nifti(tmp_path / "slice.nii.gz", np.full((32, 32, 1), -1000, np.int16))
    expect_error(capsys, ["zeroshot", one, "--checkpoint", demo], "slice.nii.gz", "1 slice")
    huge = header_only(tmp_path / "huge.nii", (2048, 2048, 2048))
    expect_error(capsys, ["zeroshot", huge, "--checkpoint", demo], "huge.nii", "8590 M voxels", "CTVLP_MAX_VOXELS")
    expect_error(capsys, ["zeroshot", volume, "--checkpoint", demo, "--max-voxels", "1000"], "over the limit of")
    monkeypatch.setenv("CTVLP_MAX_VOXELS", "1000")
    expect_error(capsys, ["zeroshot", volume, "--checkpoint", demo], "over the limit of 0 M voxels")
    monkeypatch.delenv("CTVLP_MAX_VOXELS")
    state = load_checkpoint(demo)
    state.pop("path")
    old = save_checkpoint(tmp_path / "old", {**state, "version": 99}, keep_last=1)
    expect_error(capsys, ["zeroshot", volume, "--checkpoint", str(old)], "format version 99")
    assert main(["export", segvl, "--out", str(tmp_path / "export")]) == 0
    assert capsys.readouterr().err == ""
    config = tmp_path / "export" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "format_version": 99}))
    expect_error(capsys, ["zeroshot", volume, "--checkpoint", str(tmp_path / "export")], "export format version 99")
    expect_error(capsys, ["zeroshot", volume, "--checkpoint", demo, "--labels", ""], "no labels")
    expect_error(capsys, ["segment", volume, "--checkpoint", segvl, "--prompt", " ", "--out", str(tmp_path / "h.nii.gz")],
                 "no prompts")
    expect_error(capsys, ["segment", volume, "--checkpoint", demo, "--prompt", "aorta", "--out", str(tmp_path / "h.nii.gz")],
                 "'demo' has no voxel head")
    expect_error(capsys, ["generate", volume, "--checkpoint", segvl], "'segvl' has no report decoder")
