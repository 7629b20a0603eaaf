"""The one HTML page of an evaluation (:func:`write_report`, beside metrics.json): what was evaluated, the
recipe's paper table, zero-shot ROC curves and AUROC bars, retrieval with examples, the probe, every extra
task's scalars, table and figures, a few test volumes (a slice each) with their reports and the model's
zero-shot findings, and after a training run its loss curve. Figures are matplotlib PNGs embedded as
base64, so the page is one file."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np

from ctvlp.fsutil import atomic_write_text


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_base64(fig) -> str:
    """A matplotlib figure as base64 PNG text (the figure is closed)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    pyplot().close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _png(fig) -> str:
    return f'<img src="data:image/png;base64,{png_base64(fig)}">'


def curve_figure(records: list[dict]) -> str:
    """Loss and learning rate over the metrics.jsonl records; a window without a finite loss (null) is a gap."""
    fig, ax = pyplot().subplots(1, 2, figsize=(9, 3))
    steps = [r["step"] for r in records]
    ax[0].plot(steps, [np.nan if r.get("loss") is None else r["loss"] for r in records])
    ax[0].set(xlabel="step", ylabel="training loss", title="loss")
    ax[1].plot(steps, [r["lr"] for r in records])
    ax[1].set(xlabel="step", ylabel="learning rate", title="schedule")
    return _png(fig)


def slice_figure(image: np.ndarray) -> str:
    """image (D, H, W) windowed to [-1, 1]; shows the middle axial slice (RAS: patient's right on the
    viewer's left, anterior up, as radiologists view it)."""
    fig, ax = pyplot().subplots(figsize=(2.6, 2.6))
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


def _page(path: Path, title: str, parts: list[str]) -> Path:
    """Write ``parts`` as one self-contained HTML page."""
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top;font-size:0.9em}")
    return atomic_write_text(path, f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
                                   f"</title><style>{style}</style></head><body>{''.join(parts)}</body></html>")


def roc_figure(roc: dict[str, tuple[np.ndarray, np.ndarray]], auroc: dict[str, float | None]) -> str:
    """One ROC curve per label (sklearn's roc_curve) in a grid; labels with one class are left blank."""
    from sklearn.metrics import roc_curve

    plt = pyplot()
    cols = 6
    rows = max(1, -(-len(roc) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (name, (scores, labels)) in zip(axes.flat, roc.items()):
        ax.axis("on")
        ax.plot([0, 1], [0, 1], color="#bbb", lw=0.8)
        if np.unique(labels).size == 2:
            fpr, tpr, _ = roc_curve(labels, scores)
            ax.plot(fpr, tpr)
        ax.set_title(f"{name[:26]}\nAUROC {_fmt(auroc.get(name))}", fontsize=7)
        ax.tick_params(labelsize=6)
    fig.tight_layout()
    return _png(fig)


def interval_bars(per_label: dict[str, dict], key: str = "auroc", title: str = "AUROC") -> str:
    """Horizontal bars of ``per_label[name][key]`` with their ``<key>_ci`` intervals as error bars."""
    names = [n for n, r in per_label.items() if r.get(key) is not None]
    values = np.array([per_label[n][key] for n in names], dtype=float)
    ci = np.array([per_label[n].get(f"{key}_ci") or [v, v] for n, v in zip(names, values)], dtype=float)
    err = np.abs(np.nan_to_num(ci.T - values, nan=0.0)) if len(names) else None  # (2, L)
    fig, ax = pyplot().subplots(figsize=(6, 0.25 * len(names) + 1))
    ax.barh(names, values, xerr=err, color="#4c72b0", ecolor="#333", capsize=2)
    ax.axvline(0.5, color="#999", lw=0.8, ls="--")
    ax.set(xlim=(0, 1), xlabel=f"{title} (95 % interval by patient)")
    ax.invert_yaxis()
    ax.tick_params(labelsize=7)
    return _png(fig)


def _ci_text(value, ci) -> str:
    return _fmt(value) + (f" [{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else "")


def _frame_html(frame) -> str:
    """A pandas table with floats to 3 decimals and missing values as n/a."""
    return frame.to_html(index=False, na_rep="n/a", float_format=lambda x: f"{x:.3f}", border=0)


def _summary(metrics: dict) -> list[str]:
    """The page's title and what was evaluated: the model (recipe, step, training), the cache and the protocol."""
    recipe, step, training = metrics.get("recipe"), metrics.get("step"), metrics.get("training")
    title = f"ctvlp: recipe {html.escape(str(recipe))}" + (f", step {step}" if step is not None else "")
    trained = (f"<p>trained on {training['train_volumes']} volumes for {training['seconds']:.0f} s "
               f"(run folder {html.escape(str(training['run_dir']))}).</p>") if training else ""
    return [f"<h1>{title if recipe else 'ctvlp eval'}</h1>{trained}<p>cache {html.escape(metrics['cache'])}, protocol "
            f"{metrics['protocol']['name']} ({len(metrics['protocol']['labels'])} labels), "
            f"{metrics['n']['test_volumes']} test volumes / {metrics['n']['test_scans']} scans / "
            f"{metrics['n']['test_patients']} patients; intervals: {metrics['bootstrap']['n']} patient resamples.</p>"]


def _volumes(volumes: list[dict]) -> list[str]:
    """``volumes``: dicts with ``id``, ``image`` (D, H, W), ``report`` and ``predicted`` (list of str)."""
    rows = [[slice_figure(v["image"]), html.escape(v["id"]), html.escape(v["report"]),
             html.escape("; ".join(v["predicted"]) or "no finding above threshold")] for v in volumes]
    return ["<h2>Test volumes</h2>", _table(rows, ["middle slice", "volume", "report", "zero-shot findings (model)"])]


def write_report(path: Path, metrics: dict, roc: dict, examples: list[dict], overlays: dict,
                 tables: dict | None = None, records: list[dict] | None = None,
                 volumes: list[dict] | None = None) -> Path:
    """The page of one evaluation (metrics in docs/eval-metrics.md's layout): summary, the training curve
    (``records``: the run's metrics.jsonl, after a training run), the recipe's paper table (``paper_rows``),
    zero-shot ROC curves and AUROC bars with intervals, retrieval table and ``examples``, probe bars, and for
    every extra task its scalar metrics, its table (``tables``: task -> pandas DataFrame, the task's CSV: per
    structure, per label, per robustness cell) and its ``overlays`` (each {``caption``, ``png_base64``}:
    per-volume figures such as segmentation overlays), then the test ``volumes`` (:func:`_volumes`)."""
    tables = tables or {}
    parts = _summary(metrics)
    if records:
        parts += ["<h2>Training</h2>", curve_figure(records)]
    if metrics["protocol"]["skipped"]:
        parts.append(f"<p>skipped labels: {html.escape(', '.join(metrics['protocol']['skipped']))}</p>")
    paper = metrics.get("paper_rows") or {}
    if paper.get("rows"):  # the recipe's paper table (ctvlp.eval.paper): ours beside the paper's
        rows = [[html.escape(r["row"]), _fmt(r["value"]), html.escape(r["paper"] or "-"),
                 html.escape(r.get("not_computed", "") and f"not computed: {r['not_computed']}" or r["note"])]
                for r in paper["rows"]]
        parts += [f"<h2>The paper's table ({html.escape(paper['recipe'])})</h2><p>{html.escape(paper['source'])}</p>",
                  _table(rows, ["row", "ours", "paper", "note"])]
    if "zeroshot" in metrics:
        zs = metrics["zeroshot"]
        rows = [[level, _ci_text(zs[level]["mean_auroc"], zs[level].get("mean_auroc_ci")),
                 _ci_text(zs[level]["mean_f1"], zs[level].get("mean_f1_ci"))] for level in ("volume", "scan")]
        parts += ["<h2>Zero-shot classification (test split, thresholds from validation)</h2>",
                  _table(rows, ["level", "macro AUROC", "macro F1"]),
                  f"<p>{html.escape(zs['scan_rule'])}</p>", "<h3>ROC curves (volume level)</h3>",
                  roc_figure(roc, {n: r["auroc"] for n, r in zs["volume"]["per_label"].items()}),
                  "<h3>AUROC per label (volume level)</h3>", interval_bars(zs["volume"]["per_label"])]
    if "retrieval" in metrics:
        rt = metrics["retrieval"]
        rows = [[level, d.replace("_", " ")] + [_ci_text(r[f"recall@{k}"], r.get(f"recall@{k}_ci")) for k in (1, 5, 10, 50)]
                + [_fmt(r["median_rank"])] for level in ("volume", "scan") for d, r in rt[level].items()]
        ex = [[html.escape(e["query"]), "<ol>" + "".join(
            f"<li>{'&#10003;' if ok else '&#10007;'} {html.escape(text)}</li>" for text, _, ok in e["retrieved"])
            + "</ol>"] for e in examples]
        parts += ["<h2>Retrieval (test split)</h2>",
                  _table(rows, ["level", "direction", "R@1", "R@5", "R@10", "R@50", "median rank"]),
                  f"<p>{html.escape(rt['rule'])}; chance R@5 {_fmt(rt['chance_recall@5']['volume'])} (volume), "
                  f"{_fmt(rt['chance_recall@5']['scan'])} (scan)</p><h3>Examples (scan level, volume to report)</h3>",
                  _table(ex, ["query scan's report", "top-3 retrieved reports (&#10003; = the query's scan)"])]
    if "probe" in metrics:
        pr = metrics["probe"]
        parts += ["<h2>Linear probe</h2>", f"<p>macro AUROC {_ci_text(pr['mean_auroc'], pr.get('mean_auroc_ci'))}; "
                  f"{html.escape(pr['rule'])}</p>", interval_bars(pr["per_label"])]
    for task in metrics["tasks"]:
        if task in ("zeroshot", "retrieval", "probe"):
            continue
        scalars = [[html.escape(k), _fmt(v) if isinstance(v, float) else html.escape(str(v))]
                   for k, v in metrics.get(task, {}).items() if not isinstance(v, (dict, list))]
        figures = "".join(f"<figure><img src='data:image/png;base64,{o['png_base64']}'>"
                          f"<figcaption>{html.escape(o.get('caption', ''))}</figcaption></figure>"
                          for o in overlays.get(task, []))
        table = _frame_html(tables[task]) if task in tables else ""
        parts += [f"<h2>{html.escape(task)}</h2>", _table(scalars, ["metric", "value"]), table, figures]
    if volumes:
        parts += _volumes(volumes)
    return _page(path, "ctvlp eval" if metrics.get("recipe") is None else f"ctvlp {metrics['recipe']}", parts)
