"""Whole-trainer step benchmark: samples/s of ``Trainer.fit`` per recipe (debug variants), data to optimiser.

    python benchmarks/trainer_step.py [--work DIR] [--volumes 24] [--steps 12] [--recipes demo colipri ...]

Where ``benchmarks/train_step.py`` times the vision tower alone, this times everything a training step does
on one process: the loader (``num_workers=0``, so the collate's text work — tokens, sentence targets,
opposite-sentence pairs — is on the clock, not hidden in a worker), the model's forward of the groups the
objective reads, the objective, backward, clipping and the optimiser. It is the before/after measure of a
change to the batch's path (issue 18). A synthetic cohort of ``--volumes`` volumes (64 x 64 matrix) is made
and prepared once on the debug grid, as a user would (``ctvlp synth``, ``manifest ctrate``, ``prepare
--recipe demo --debug``); each recipe's debug variant then trains ``--steps`` steps with a metrics record per
step, and the median of the per-step samples/s over the steps after the first two (warm-up) is reported.

Results: benchmarks/results/trainer_step-<date>[-TAG].json (with the machine and the git commit).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import tempfile
from pathlib import Path

import torch

from machine import save_result

import ctvlp
from ctvlp.cli import main as cli
from ctvlp.errors import CtvlpError
from ctvlp.recipes import NAMES, get_recipe
from ctvlp.train.loop import Trainer


def make_cache(work: Path, volumes: int) -> Path:
    cache = work / "cache"
    if (cache / "index.parquet").exists():
        return cache
    assert cli(["synth", "--out", str(work / "cohort"), "--n", str(volumes), "--matrix", "64", "--seed", "0"]) == 0
    assert cli(["manifest", "ctrate", str(work / "cohort"), "--radgenome", str(work / "cohort" / "radgenome"),
                "--val-fraction", "0.25", "--out", str(work / "m.parquet")]) == 0
    assert cli(["prepare", "--manifest", str(work / "m.parquet"), "--out", str(cache), "--recipe", "demo",
                "--debug"]) == 0
    return cache


def bench(recipe: str, cache: Path, out: Path, steps: int) -> dict:
    cfg = get_recipe(recipe, debug=True)
    cfg = dataclasses.replace(cfg, steps=steps, log_every=1, ckpt_every=10 * steps, max_minutes=0,
                              data=dataclasses.replace(cfg.data, num_workers=0))
    torch.manual_seed(0)
    Trainer(cfg, cache, out, progress=False).fit()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rates = [r["samples_per_s"] for r in records if "samples_per_s" in r][2:]
    return {"recipe": recipe, "batch_size": cfg.data.batch_size, "steps": steps, "terms": list(cfg.all_terms),
            "samples_per_s": statistics.median(rates), "seconds_per_step": cfg.data.batch_size / statistics.median(rates)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", help="scratch folder for the cohort and cache (default: a temporary one)")
    parser.add_argument("--volumes", type=int, default=24)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--recipes", nargs="+", default=list(NAMES), choices=NAMES)
    parser.add_argument("--tag", help="suffix of the result file (e.g. before/after)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the shared 2-core machine: a second thread mostly waits for a core
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="trainer-step-"))
    cache = make_cache(work, args.volumes)
    package = Path(ctvlp.__file__).parent  # the code measured (a worktree of another commit on PYTHONPATH)
    commit = subprocess.run(["git", "-C", str(package), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    rows = []
    for name in args.recipes:
        try:
            rows.append(bench(name, cache, work / "runs" / f"{name}-{args.tag or 'run'}", args.steps))
        except CtvlpError as err:  # a recipe whose data needs this cohort lacks: said, not hidden
            rows.append({"recipe": name, "skipped": str(err)})
    print(f"commit {commit}, {args.volumes} volumes, {args.steps} steps, 1 thread, num_workers=0")
    print(f"{'recipe':10} {'batch':>5} {'samples/s':>10} {'s/step':>8}  terms")
    for r in rows:
        if "skipped" in r:
            print(f"{r['recipe']:10} skipped: {r['skipped']}")
        else:
            print(f"{r['recipe']:10} {r['batch_size']:>5} {r['samples_per_s']:>10.2f} {r['seconds_per_step']:>8.3f}  "
                  f"{', '.join(r['terms'])}")
    save_result("trainer_step", {"commit": commit, "volumes": args.volumes, "rows": rows}, tag=args.tag)


if __name__ == "__main__":
    main()
