"""`ctvlp demo --out DIR`: the whole framework on a laptop without a GPU.

synth (a chest-CT cohort in CT-RATE's layout, findings at the `large` size so that they span
several voxels at the demo's resolution) -> `manifest ctrate` (the real adapter) -> `prepare` (the
chunk cache at 3 x 3 x 6 mm, anti-aliased) -> `train --recipe demo` (RoPE ViT, z-chunks with organ sentences, sigmoid loss,
Muon) -> zero-shot classification and retrieval on the held-out split -> DIR/metrics.json and
DIR/report.html. Steps whose output exists are reused (delete DIR to start over).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

DIFFICULTY = "large"
"""Lesion size of the demo cohort: at ``easy`` a nodule spans about one 3 mm voxel."""


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("demo", help="synthesise a cohort, prepare it, train and evaluate the demo recipe",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--n", type=int, default=2000,
                   help="volumes in the synthetic cohort (default 2000; fewer train a weaker model)")
    p.add_argument("--seed", type=int, default=0, help="seed of the cohort and of training (default 0)")
    p.add_argument("--workers", type=int, default=2, help="processes for synth, prepare and loading (default 2)")
    p.add_argument("--steps", type=int, help="training steps (default: the demo recipe's)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field of the demo recipe (repeatable)")
    p.add_argument("--debug", action="store_true", help="the recipe's tiny debug variant (seconds, for tests)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)
    return p


def _step(title: str, argv: list[str]) -> float:
    from ctvlp.cli import main

    print(f"\n== {title}: ctvlp {' '.join(argv)}", flush=True)
    start = time.perf_counter()
    code = main(argv)
    if code != 0:
        raise SystemExit(code)
    return time.perf_counter() - start


def prepare_data(args: argparse.Namespace) -> tuple[Path, dict[str, float]]:
    out = args.out
    cohort, manifest, cache_dir = out / "cohort", out / "manifest.parquet", out / "cache"
    seconds, quiet = {}, ["--no-progress"] if args.no_progress else []
    if not (cohort / "synth.json").is_file():
        seconds["synth"] = _step("synthesise", ["synth", "--out", str(cohort), "--n", str(args.n), "--seed",
                                                str(args.seed), "--workers", str(args.workers),
                                                "--difficulty", DIFFICULTY, *quiet])
    if not manifest.is_file():
        seconds["manifest"] = _step("read with the CT-RATE adapter", [
            "manifest", "ctrate", str(cohort), "--radgenome", str(cohort / "radgenome"), "--out", str(manifest)])
    seconds["prepare"] = _step("prepare the cache (finished volumes are skipped)", [
        "prepare", "--manifest", str(manifest), "--out", str(cache_dir), "--workers", str(args.workers),
        "--recipe", "demo", *(["--debug"] if args.debug else []), *quiet])
    return cache_dir, seconds


def run(args: argparse.Namespace) -> int:
    from ctvlp.config import apply_overrides
    from ctvlp.fsutil import jsonable
    from ctvlp.recipes import get_recipe

    start = time.perf_counter()
    overrides = list(args.overrides) + [f"seed={args.seed}", f"data.num_workers={args.workers}"]
    cfg = apply_overrides(get_recipe("demo", debug=args.debug),
                          overrides + ([f"steps={args.steps}"] if args.steps is not None else []))
    cache_dir, seconds = prepare_data(args)
    metrics = train_and_evaluate(cfg, cache_dir, args.out, progress=not args.no_progress)
    metrics["seconds"] = {**seconds, "train": metrics["train_seconds"], "total": time.perf_counter() - start}
    (args.out / "metrics.json").write_text(json.dumps(jsonable(metrics), indent=2, allow_nan=False))
    zs, rt = metrics["zero_shot"], metrics["retrieval"]
    print(f"\n== zero-shot on {metrics['n_test']} held-out volumes: mean AUROC {zs['mean_auroc']:.3f} over "
          f"{len(zs['labels_in_mean'])} labels; R@5 volume->report {rt['volume_to_report']['recall@5']:.3f}, "
          f"report->volume {rt['report_to_volume']['recall@5']:.3f} (chance {metrics['chance_recall@5']:.3f})")
    print(f"   {args.out / 'metrics.json'}\n   {args.out / 'report.html'}\n   total {metrics['seconds']['total']:.0f} s")
    return 0


def train_and_evaluate(cfg, cache_dir: Path, out: Path, progress: bool = True) -> dict:
    """Train ``cfg`` on the cache, evaluate on its held-out split, write metrics.json and report.html."""
    import numpy as np

    from ctvlp.data.preprocess import window
    from ctvlp.eval.html import write_report
    from ctvlp.eval.run import evaluate_model
    from ctvlp.train.loop import Trainer
    from ctvlp.train.metrics_log import read_metrics

    run_dir = out / "run"
    print(f"\n== train recipe {cfg.recipe!r} for {cfg.steps} steps -> {run_dir}", flush=True)
    trainer = Trainer(cfg, cache_dir, run_dir, progress=progress)
    start = time.perf_counter()
    trainer.fit()
    train_seconds = time.perf_counter() - start
    print(f"\n== evaluate on the held-out split ({cfg.eval.test_split}; thresholds on {cfg.eval.val_split})", flush=True)
    metrics, test, scores, labels = evaluate_model(trainer.model, trainer.cache, cfg.eval, details=True)
    metrics = {"recipe": cfg.recipe, "n_train": len(trainer.loader.dataset), "n_test": metrics["n_test"],
               "train_seconds": train_seconds, "steps": trainer.step, **metrics}
    thresholds = np.array([metrics["zero_shot"]["per_label"][n]["threshold"] for n in labels])
    examples = []
    for i in range(min(6, len(test.ids))):
        volume = trainer.cache.volume(test.ids[i])
        lo, hi = trainer.cache.config.hu_window
        examples.append({"id": test.ids[i], "image": window(volume.slab(0, volume.shape[0]), lo, hi),
                         "report": test.texts[i],
                         "predicted": [n for n, s, t in zip(labels, scores[i], thresholds) if np.isfinite(t) and s >= t]})
    write_report(out / "report.html", metrics, read_metrics(run_dir), examples)
    return metrics
