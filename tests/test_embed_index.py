"""`ctvlp embed`, `ctvlp index build`, `ctvlp retrieve` on a debug checkpoint: the embeddings are
encode_volume's with or without workers, bad files are skipped and listed, retrieval ranks as a plain matmul."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

import ctvlp
from ctvlp.cli import main
from ctvlp.config import apply_overrides
from ctvlp.inference.batch import find_inputs, read_embeddings, slice_count
from ctvlp.inference.index import load_index, model_fingerprint
from ctvlp.models.store import load_checkpoint
from ctvlp.recipes import get_recipe
from ctvlp.train.checkpoint import save_checkpoint
from ctvlp.train.loop import Trainer
from conftest import make_synthetic_cache, stderr_terminal

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("embed")
    cache = make_synthetic_cache(root, 12, 11)
    Trainer(apply_overrides(get_recipe("demo", debug=True), ["steps=1"]), cache, root / "demo", progress=False).fit()
    files = sorted(str(p) for p in (root / "cohort" / "dataset").rglob("*.nii.gz"))[:4]
    model = ctvlp.load_model(root / "demo")
    reference = torch.stack([model.encode_volume(f) for f in files]).numpy()  # (4, D)
    return {"root": root, "checkpoint": str(root / "demo"), "files": files, "model": model, "reference": reference}


def embed(run, out: Path, *extra: str, paths=None) -> int:
    return main(["embed", *(run["files"] if paths is None else paths), "--checkpoint", run["checkpoint"],
                 "--out", str(out), *extra])


def test_embed_with_and_without_workers_equals_encode_volume(run, tmp_path, capsys):
    tables = {}
    for workers in ("0", "2"):
        assert embed(run, tmp_path / f"w{workers}.parquet", "--workers", workers) == 0
        assert "embedded 4 volumes" in capsys.readouterr().out
        paths, emb = read_embeddings(tmp_path / f"w{workers}.parquet")
        assert paths == run["files"]
        np.testing.assert_array_equal(emb, run["reference"])
        tables[workers] = pd.read_parquet(tmp_path / f"w{workers}.parquet")
    table = tables["2"]
    assert list(table.columns) == ["path", "embedding", "model", "step", "n_slices", "preprocess_seconds"]
    assert set(table["model"]) == {run["model"].spec.path} and set(table["step"]) == {1}
    images = [nib.load(f) for f in run["files"]]
    assert list(table["n_slices"]) == [slice_count(im.shape, im.affine) for im in images]
    assert (table["preprocess_seconds"] > 0).all()
    assert pd.read_csv(tmp_path / "w2.parquet.skipped.csv").empty
    # batches of one shape: the encoder's float rounding only
    assert embed(run, tmp_path / "b4.parquet", "--workers", "0", "--batch-size", "4") == 0
    np.testing.assert_allclose(read_embeddings(tmp_path / "b4.parquet")[1], run["reference"], rtol=0, atol=1e-5)


def test_bad_files_are_skipped_listed_and_the_rest_embedded(run, tmp_path, capsys):
    one_slice = tmp_path / "one_slice.nii.gz"
    nib.save(nib.Nifti1Image(np.full((32, 32, 1), -1000, np.int16), np.eye(4)), one_slice)
    text = tmp_path / "notes.nii.gz"
    text.write_text("not an image")
    missing = tmp_path / "missing.nii"
    paths = [run["files"][0], str(one_slice), run["files"][1], str(text), str(missing)]
    out = tmp_path / "emb.parquet"
    assert embed(run, out, "--workers", "2", paths=paths) == 0
    err = capsys.readouterr().err
    assert f"skipped {one_slice}: " in err and f"skipped {missing}: no such file" in err and str(text) in err
    skipped = pd.read_csv(f"{out}.skipped.csv")
    assert list(skipped["path"]) == [str(one_slice), str(text), str(missing)]
    assert "1 slice" in skipped["reason"][0]
    got_paths, emb = read_embeddings(out)
    assert got_paths == run["files"][:2]
    np.testing.assert_array_equal(emb, run["reference"][:2])
    assert embed(run, tmp_path / "none.parquet", "--workers", "0", paths=[str(one_slice), str(missing)]) == 2
    assert "no input could be embedded (2 skipped" in capsys.readouterr().err
    assert not (tmp_path / "none.parquet").exists() and (tmp_path / "none.parquet.skipped.csv").is_file()


def test_progress_bar_counts_every_input_on_stderr_only(run, tmp_path, capsys):
    """embed and index build (--device cpu): the bar counts embedded and skipped inputs; --no-progress draws none."""
    text = tmp_path / "notes.nii.gz"
    text.write_text("not an image")
    paths = [run["files"][0], str(text), run["files"][1]]
    commands = {"embed": ["embed", *paths, "--out", str(tmp_path / "e.parquet")],
                "index build": ["index", "build", *paths, "--out", str(tmp_path / "idx")]}
    for name, argv in commands.items():
        with stderr_terminal() as terminal:
            assert main([*argv, "--checkpoint", run["checkpoint"], "--workers", "0", "--device", "cpu"]) == 0
        assert "embed: 100%" in terminal.getvalue() and "| 3/3 [" in terminal.getvalue(), name
        assert f"ctvlp {name}: skipped {text}" in terminal.getvalue()
        assert "%|" not in capsys.readouterr().out
    np.testing.assert_array_equal(read_embeddings(tmp_path / "e.parquet")[1], run["reference"][:2])
    with stderr_terminal() as terminal:
        assert main([*commands["embed"], "--checkpoint", run["checkpoint"], "--workers", "0", "--no-progress"]) == 0
    lines = terminal.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"ctvlp embed: skipped {text}: ")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_embeds_indexes_and_retrieves_as_the_cpu(run, tmp_path, capsys):
    cuda = ["--checkpoint", run["checkpoint"], "--workers", "0", "--device", "cuda"]
    assert main(["embed", *run["files"], "--out", str(tmp_path / "e.parquet"), *cuda]) == 0
    np.testing.assert_allclose(read_embeddings(tmp_path / "e.parquet")[1], run["reference"], rtol=0, atol=5e-3)
    assert main(["index", "build", *run["files"], "--out", str(tmp_path / "idx"), *cuda]) == 0
    capsys.readouterr()
    query = "Large right pleural effusion."
    scores = run["reference"] @ run["model"].encode_text([query])[0].numpy()  # (4,) on the CPU
    assert main(["retrieve", str(tmp_path / "idx"), query, "--json", "--device", "cuda"]) == 0
    hits = json.loads(capsys.readouterr().out)
    np.testing.assert_allclose([h["score"] for h in hits], sorted(scores, reverse=True), rtol=0, atol=5e-3)


def test_folder_rule_finds_volumes_and_dicom_series(tmp_path):
    (tmp_path / "a" / "deep").mkdir(parents=True)
    series, named = tmp_path / "a" / "series", tmp_path / "d"
    series.mkdir()
    named.mkdir()
    for name in ("a/deep/x.nii.gz", "a/y.nrrd", "b.mha", "c.nii", "a/notes.txt", ".hidden.nii.gz", "d/IM1.dcm",
                 "a/series/extra.nii.gz"):  # inside a series folder: not searched
        (tmp_path / name).write_bytes(b"")
    for i in range(3):  # slices without a suffix: told by the DICOM preamble
        (series / f"CT.{i}").write_bytes(bytes(128) + b"DICM" + bytes(8))
    found = find_inputs([tmp_path, tmp_path / "b.mha"])
    assert found == [tmp_path / "a" / "deep" / "x.nii.gz", series, tmp_path / "a" / "y.nrrd", tmp_path / "b.mha",
                     tmp_path / "c.nii", named]
    assert find_inputs([series]) == [series]


def test_index_build_and_retrieve_rank_as_a_direct_matmul(run, tmp_path, capsys):
    folder = tmp_path / "scans"
    folder.mkdir()
    for i, f in enumerate(run["files"]):
        shutil.copy(f, folder / f"scan{i}.nii.gz")
    idx = tmp_path / "idx"
    assert main(["index", "build", str(folder), "--checkpoint", run["checkpoint"], "--out", str(idx),
                 "--workers", "0"]) == 0
    capsys.readouterr()
    index = load_index(idx)
    assert index.paths == [str(folder / f"scan{i}.nii.gz") for i in range(4)]
    assert index.meta["dim"] == run["reference"].shape[1] and index.meta["model"]["step"] == 1
    assert index.meta["model"]["fingerprint"] == model_fingerprint(run["model"])
    np.testing.assert_array_equal(index.embeddings, run["reference"])
    query = "Large right pleural effusion."
    scores = run["reference"] @ run["model"].encode_text([query])[0].numpy()  # (4,)
    order = np.argsort(-scores, kind="stable")
    assert main(["retrieve", str(idx), query, "--json", "--device", "cpu"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert [h["rank"] for h in hits] == [1, 2, 3, 4]
    assert [h["path"] for h in hits] == [index.paths[i] for i in order]
    np.testing.assert_allclose([h["score"] for h in hits], scores[order], rtol=0, atol=1e-5)
    assert main(["retrieve", str(idx), query, "-k", "2", "--checkpoint", run["checkpoint"]]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["1", "2"] and lines[0].split()[2] == hits[0]["path"]


def expect_error(capsys, argv: list[str], reason: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert reason in err and len(err.strip().splitlines()) == 1, err


def test_retrieve_refuses_bad_input_and_another_model(run, tmp_path, capsys):
    idx = tmp_path / "idx"
    assert main(["index", "build", run["files"][0], run["files"][1], "--checkpoint", run["checkpoint"],
                 "--out", str(idx), "--workers", "0"]) == 0
    capsys.readouterr()
    expect_error(capsys, ["retrieve", str(idx), "  "], "empty query")
    expect_error(capsys, ["retrieve", str(idx), "effusion", "-k", "0"], "-k must be at least 1")
    expect_error(capsys, ["retrieve", str(tmp_path), "effusion"], "not a ctvlp index")
    state = load_checkpoint(run["checkpoint"])
    state.pop("path")
    name = next(k for k in state["model"] if k.startswith("image_proj"))
    state["model"][name] = state["model"][name] + 1.0
    other = save_checkpoint(tmp_path / "other", state, keep_last=1)
    expect_error(capsys, ["retrieve", str(idx), "effusion", "--checkpoint", str(other)], "differs from the one index")
    assert main(["index", "build", str(tmp_path / "nothing"), "--checkpoint", run["checkpoint"],
                 "--out", str(tmp_path / "idx2")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"ctvlp index build: skipped {tmp_path / 'nothing'}: no such file or folder",
                   "ctvlp index build: error: no input could be embedded (1 skipped)"]
    assert not (tmp_path / "idx2").exists()
