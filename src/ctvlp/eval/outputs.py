"""The files of every evaluation (`ctvlp eval`, and `ctvlp train`, `demo`, `compare` after training):
metrics.json (docs/eval-metrics.md), one CSV per task, report.html (:func:`ctvlp.eval.html.write_report`,
which shows each extra task's CSV table)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ctvlp.data.manifest import save_table
from ctvlp.eval.html import write_report
from ctvlp.eval.zeroshot import METRICS
from ctvlp.fsutil import atomic_write_text, jsonable


def _ci(row: dict, key: str) -> tuple:
    lo_hi = row.get(f"{key}_ci") or (None, None)
    return tuple(lo_hi)


def zeroshot_frame(zs: dict) -> pd.DataFrame:
    """One row per (level, label) plus a ``macro`` row per level: every metric with its interval."""
    rows = []
    for level in ("volume", "scan"):
        result = zs[level]
        for name, r in [*result["per_label"].items(), ("macro", {m: result[f"mean_{m}"] for m in METRICS}
                                                         | {f"{m}_ci": result.get(f"mean_{m}_ci") for m in METRICS})]:
            row = {"level": level, "label": name}
            for m in METRICS:
                row[m], (row[f"{m}_lo"], row[f"{m}_hi"]) = r.get(m), _ci(r, m)
            row.update({k: r.get(k) for k in ("threshold", "n", "n_pos")})
            row["excluded"] = result["excluded"].get(name, "")
            rows.append(row)
    return pd.DataFrame(rows)


def retrieval_frame(rt: dict) -> pd.DataFrame:
    """One row per (level, direction, metric) with value and interval."""
    rows = [{"level": level, "direction": d, "metric": k, "value": v, "lo": _ci(r, k)[0], "hi": _ci(r, k)[1]}
            for level in ("volume", "scan") for d, r in rt[level].items()
            for k, v in r.items() if not k.endswith("_ci")]
    return pd.DataFrame(rows)


def probe_frame(probe: dict) -> pd.DataFrame:
    """One row per label (plus ``macro``): AUROC, interval, chosen C, validation AUROC, counts."""
    rows = [{"label": n, "auroc": r["auroc"], "auroc_lo": _ci(r, "auroc")[0], "auroc_hi": _ci(r, "auroc")[1],
             "C": r["C"], "val_auroc": r["val_auroc"], "n": r["n"], "n_pos": r["n_pos"],
             "excluded": probe["excluded"].get(n, "")} for n, r in probe["per_label"].items()]
    rows += [{"label": n, "excluded": reason} for n, reason in probe["excluded"].items() if n not in probe["per_label"]]
    rows.append({"label": "macro", "auroc": probe["mean_auroc"], "auroc_lo": _ci(probe, "mean_auroc")[0],
                 "auroc_hi": _ci(probe, "mean_auroc")[1]})
    return pd.DataFrame(rows)


def task_frame(result: dict) -> pd.DataFrame:
    """An extra task: one row per entry of its per-item map (``per_structure``, ``per_label``, ``per_organ``)
    when it has one, else its scalars flattened into one row."""
    for key in ("per_structure", "per_label", "per_organ"):
        if isinstance(result.get(key), dict) and result[key]:
            return pd.DataFrame([{"item": k, **pd.json_normalize(v).iloc[0].to_dict()} if isinstance(v, dict)
                                 else {"item": k, "value": v} for k, v in result[key].items()])
    return pd.json_normalize({k: v for k, v in result.items() if not isinstance(v, list)})


def robustness_frame(result: dict) -> pd.DataFrame:
    """One row per (slice count, padding) cell: its ``summary`` row (mean AUROC, R@5 both ways, task headlines)."""
    return pd.DataFrame(result["summary"])


def real_masks_frame(result: dict) -> pd.DataFrame:
    """One row per (method, case, structure): Dice, HD95 (mm) and counts."""
    rows = [{"method": method, "case": case, "structure": name, **entry}
            for method in ("zero_shot", "probe") for case, r in (result.get(method) or {}).items()
            for name, entry in r["per_structure"].items()]
    return pd.DataFrame(rows)


FRAMES = {"zeroshot": zeroshot_frame, "retrieval": retrieval_frame, "probe": probe_frame,
          "robustness": robustness_frame, "real_masks": real_masks_frame}


def write_outputs(out: Path, result) -> list[Path]:
    """Write metrics.json, ``<task>.csv`` for every task, ``paper_rows.csv`` (when the metrics have a paper table)
    and report.html into ``out``, each atomically; the paths."""
    metrics = jsonable(result.metrics)
    paths = [atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2, allow_nan=False))]
    tables = {}
    for task in metrics["tasks"]:
        if isinstance(metrics.get(task), dict):
            tables[task] = FRAMES.get(task, task_frame)(metrics[task])
            paths.append(save_table(tables[task], out / f"{task}.csv"))
    if metrics.get("paper_rows", {}).get("rows"):
        paths.append(save_table(pd.DataFrame(metrics["paper_rows"]["rows"]), out / "paper_rows.csv"))
    paths.append(write_report(out / "report.html", metrics, result.roc, result.examples, result.overlays, tables,
                              result.records, result.volumes))
    return paths
