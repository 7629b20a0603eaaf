"""`ctvlp demo --out DIR`: the whole framework on a laptop without a GPU.

synth (a chest-CT cohort in CT-RATE's layout, findings at the `large` size so that they span
several voxels at the demo's resolution) -> `manifest ctrate` (the real adapter) -> `prepare` (the
chunk cache at 3 x 3 x 6 mm, anti-aliased) -> `train --recipe demo` (RoPE ViT, z-chunks with organ sentences, sigmoid loss,
Muon) -> zero-shot classification and retrieval on the held-out split -> DIR/metrics.json
(docs/eval-metrics.md), DIR/<task>.csv and DIR/report.html. Steps whose output exists are reused (delete DIR to
start over).
"""

from __future__ import annotations

import argparse
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
    from ctvlp.cli._run import headline, train_and_evaluate
    from ctvlp.config import apply_overrides
    from ctvlp.recipes import get_recipe

    start = time.perf_counter()
    overrides = list(args.overrides) + [f"seed={args.seed}", f"data.num_workers={args.workers}"]
    cfg = apply_overrides(get_recipe("demo", debug=args.debug),
                          overrides + ([f"steps={args.steps}"] if args.steps is not None else []))
    cache_dir, seconds = prepare_data(args)
    print(f"\n== train recipe {cfg.recipe!r} for {cfg.steps} steps -> {args.out / 'run'}", flush=True)
    outcome = train_and_evaluate(cfg, cache_dir, args.out / "run", args.out, progress=not args.no_progress,
                                 training={"prepare_seconds": seconds})
    metrics = outcome.metrics
    chance = metrics["retrieval"]["chance_recall@5"]["volume"]
    print(f"\n== zero-shot on {metrics['n']['test_volumes']} held-out volumes: {headline(metrics)} "
          f"(chance {chance:.3f})")
    print(f"   {args.out / 'metrics.json'}\n   {args.out / 'report.html'}\n   total {time.perf_counter() - start:.0f} s")
    return 0
