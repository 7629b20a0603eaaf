"""A self-contained HTML page for a run: training curve, per-label zero-shot table, retrieval numbers
and a few test volumes (a slice each) with their reports and the model's zero-shot findings.
Figures are matplotlib PNGs embedded as base64, so the page is one file."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np


def _pyplot():
    """matplotlib.pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    _pyplot().close(fig)
    return f'<img src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def curve_figure(records: list[dict]) -> str:
    fig, ax = _pyplot().subplots(1, 2, figsize=(9, 3))
    steps = [r["step"] for r in records]
    ax[0].plot(steps, [r["loss"] for r in records])
    ax[0].set(xlabel="step", ylabel="training loss", title="loss")
    ax[1].plot(steps, [r["lr"] for r in records])
    ax[1].set(xlabel="step", ylabel="learning rate", title="schedule")
    return _png(fig)


def slice_figure(image: np.ndarray) -> str:
    """image (D, H, W) windowed to [-1, 1]; shows the middle axial slice (RAS: patient's right on the
    viewer's left, anterior up, as radiologists view it)."""
    fig, ax = _pyplot().subplots(figsize=(2.6, 2.6))
    axial = image[image.shape[0] // 2]  # (Y, X), Y grows anterior, X grows to the patient's right
    ax.imshow(axial[::-1, ::-1], cmap="gray", vmin=-1, vmax=1)
    ax.axis("off")
    return _png(fig)


def _table(rows: list[list[str]], head: list[str]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def _fmt(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.3f}"


def write_report(path: Path, metrics: dict, records: list[dict], examples: list[dict]) -> Path:
    """``examples``: dicts with ``id``, ``image`` (D, H, W), ``report`` and ``predicted`` (list of str)."""
    zs, rt = metrics["zero_shot"], metrics["retrieval"]
    label_rows = [[html.escape(name), _fmt(r["auroc"]), _fmt(r["f1"]), _fmt(r["precision"]), str(r["n_pos"]),
                   "" if name not in zs.get("excluded", {}) else html.escape(zs["excluded"][name])]
                  for name, r in zs["per_label"].items()]
    retrieval_rows = [[d.replace("_", " ")] + [_fmt(rt[d][f"recall@{k}"]) for k in (1, 5, 10, 50)]
                      for d in ("volume_to_report", "report_to_volume")]
    example_rows = [[slice_figure(e["image"]), html.escape(e["id"]), html.escape(e["report"]),
                     html.escape("; ".join(e["predicted"]) or "no finding above threshold")] for e in examples]
    parts = [
        f"<h1>ctvlp run: recipe {html.escape(str(metrics.get('recipe', '')))}</h1>",
        f"<p>{metrics.get('n_train', '?')} training volumes, {metrics.get('n_test', '?')} test volumes; "
        f"training {metrics.get('train_seconds', 0):.0f} s. Zero-shot mean AUROC <b>{_fmt(zs['mean_auroc'])}</b> "
        f"over {len(zs.get('labels_in_mean', []))} labels (thresholds chosen on the validation split).</p>",
        "<h2>Training</h2>", curve_figure(records) if records else "<p>no records</p>",
        "<h2>Zero-shot classification (test split)</h2>",
        _table(label_rows, ["label", "AUROC", "F1", "precision", "positives", "left out of the mean"]),
        "<h2>Retrieval (test split)</h2>",
        _table(retrieval_rows, ["direction", "R@1", "R@5", "R@10", "R@50"]),
        f"<p>chance R@5: {_fmt(metrics.get('chance_recall@5'))}</p>",
        "<h2>Test volumes</h2>",
        _table(example_rows, ["middle slice", "volume", "report", "zero-shot findings (model)"]),
    ]
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top;font-size:0.9em}")
    path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>ctvlp run</title>"
                    f"<style>{style}</style></head><body>{''.join(parts)}</body></html>")
    return path
