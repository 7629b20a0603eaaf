"""`ctvlp demo` end to end (debug variant): synth -> adapter -> prepare -> train -> evaluate -> files."""

from __future__ import annotations

import json

from ctvlp.cli import main


def test_demo_debug_writes_metrics_and_report(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--n", "30", "--debug", "--no-progress", "--workers", "1"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())  # standard JSON: NaN written as null
    assert metrics["recipe"] == "demo" and metrics["training"]["train_volumes"] > 0 and metrics["n"]["test_volumes"] > 0
    assert metrics["training"]["seconds"] > 0 and metrics["step"] == 10
    zs = metrics["zeroshot"]["volume"]
    assert set(zs["labels_in_mean"]) <= set(zs["per_label"]) and zs["labels_in_mean"]
    for name in zs["labels_in_mean"]:
        assert {"auroc", "f1", "precision"} <= set(zs["per_label"][name])
        assert 0.0 <= zs["per_label"][name]["auroc"] <= 1.0
    for direction in ("volume_to_report", "report_to_volume"):
        assert {"recall@1", "recall@5", "recall@10"} <= set(metrics["retrieval"]["volume"][direction])
    html = (out / "report.html").read_text()
    assert "Zero-shot classification" in html and html.count("data:image/png;base64") >= 2
    assert [json.loads(line)["step"] for line in (out / "run" / "metrics.jsonl").read_text().splitlines()] == \
        [2, 4, 6, 8, 10]
    printed = capsys.readouterr().out
    assert "mean AUROC" in printed and "report.html" in printed
    # A second run reuses the cohort, manifest and cache.
    assert main(["demo", "--out", str(out), "--n", "30", "--debug", "--no-progress", "--workers", "1"]) == 0
    assert "synthesise" not in capsys.readouterr().out
