"""`ctvlp manifest ctrate | generic | merge` on tiny fixtures (written by test_adapters' helpers)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd

from ctvlp.cli import main
from ctvlp.data.manifest import Manifest
from test_adapters import TRAIN, VALID, make_ctrate, phantom_hu, write_nifti


def test_ctrate_writes_manifest_summary_and_skipped_list(tmp_path, capsys):
    root = make_ctrate(tmp_path / "ctrate")
    out = tmp_path / "out/m.parquet"
    assert main(["manifest", "ctrate", str(root), "--val-fraction", "0.2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    manifest = Manifest.load(out)
    assert len(manifest) == len(TRAIN) - 1 + len(VALID)
    assert f"wrote {out}: {len(manifest)} volumes" in printed
    assert "  test            2         2" in printed  # CT-RATE's valid -> test
    nodule = next(line for line in printed.splitlines() if "Lung nodule" in line)
    assert nodule.split()[-2:] == ["8/9", "88.9%"]  # train_2 has no labels: 9 available of 10
    skipped = pd.read_csv(tmp_path / "out/m.skipped.csv")
    assert len(skipped) == 3 and f"skipped: 3 row(s), listed in {tmp_path / 'out/m.skipped.csv'}" in printed
    assert list(skipped.columns) == ["name", "reason"]


def test_generic_then_merge(tmp_path, capsys):
    write_nifti(tmp_path / "a.nii.gz", phantom_hu())
    pd.DataFrame({"path": ["a.nii.gz"], "nodule": [1], "age": [61], "split": ["train"]}).to_csv(
        tmp_path / "rad.csv", index=False)
    pd.DataFrame({"path": ["a.nii.gz"], "id": ["other"], "label:Emphysema": [0],
                  "split": ["test"]}).to_csv(tmp_path / "mine.csv", index=False)
    assert main(["manifest", "generic", str(tmp_path / "rad.csv"), "--label-map", "rad_chestct",
                 "--source", "rad-chestct", "--out", str(tmp_path / "rad.parquet")]) == 0
    assert capsys.readouterr().err.splitlines() == [
        f"ctvlp manifest: warning: {tmp_path / 'rad.csv'}: columns not in the label mapping (ignored): ['age']"]
    assert main(["manifest", "generic", str(tmp_path / "mine.csv"), "--out", str(tmp_path / "mine.csv.parquet")]) == 0
    assert capsys.readouterr().err == ""
    assert main(["manifest", "merge", str(tmp_path / "rad.parquet"), str(tmp_path / "mine.csv.parquet"),
                 "--out", str(tmp_path / "all.csv")]) == 0
    printed = capsys.readouterr().out
    merged = Manifest.load(tmp_path / "all.csv")
    _, available = merged.labels()
    names = merged.label_names
    assert available[:, names.index("Lung nodule")].tolist() == [True, False]
    assert available[:, names.index("Emphysema")].tolist() == [False, True]
    assert "skipped" not in printed and "Emphysema" in printed
    assert (tmp_path / "rad.skipped.csv").is_file() and (tmp_path / "mine.csv.skipped.csv").is_file()


def test_bad_root_is_one_line_and_exit_2(tmp_path):
    run = subprocess.run([sys.executable, "-m", "ctvlp", "manifest", "ctrate", str(tmp_path / "nope"),
                          "--out", str(tmp_path / "m.parquet")], capture_output=True, text=True)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        f"ctvlp manifest: error: {tmp_path / 'nope'}: not a CT-RATE root: it has no dataset/ folder"]
    assert not (tmp_path / "m.parquet").exists()


def test_bad_csv_and_duplicate_merge_exit_2(tmp_path, capsys):
    (tmp_path / "l.csv").write_text("file\nx\n")
    assert main(["manifest", "generic", str(tmp_path / "l.csv"), "--out", str(tmp_path / "m.parquet")]) == 2
    assert "lacks column(s) ['path']" in capsys.readouterr().err
    write_nifti(tmp_path / "a.nii.gz", np.asarray(phantom_hu()))
    pd.DataFrame({"path": ["a.nii.gz"]}).to_csv(tmp_path / "ok.csv", index=False)
    assert main(["manifest", "generic", str(tmp_path / "ok.csv"), "--out", str(tmp_path / "a.parquet")]) == 0
    assert main(["manifest", "merge", str(tmp_path / "a.parquet"), str(tmp_path / "a.parquet"),
                 "--out", str(tmp_path / "m.parquet")]) == 2
    assert "duplicate volume ids" in capsys.readouterr().err
