"""`ctvlp train --recipe NAME --data CACHE --out DIR [--steps N] [--set a.b=value ...] [--resume] [--debug]`

Trains a recipe on a prepared cache (`ctvlp prepare`). Writes OUT/config.yaml (the resolved config),
OUT/metrics.jsonl, OUT/tb/ (TensorBoard) and OUT/checkpoints/step-NNNNNNN.pt (the last `keep_last`,
e.g. --set keep_last=3), then evaluates the model on the held-out split (zero-shot, retrieval and the
recipe's eval.tasks; `ctvlp eval` on the checkpoint adds intervals and the linear probe) into OUT/eval/:
metrics.json (docs/eval-metrics.md), one CSV per task and report.html. `ctvlp config NAME [--set ...]`
prints the resolved config with every field's help: what --set can change. Runs the same under `torchrun --nproc_per_node N -m ctvlp train ...`
(DDP; only rank 0 writes).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ctvlp.recipes import NAMES


def add_config_args(p: argparse.ArgumentParser) -> None:
    """`--steps`, `--set` and `--debug`: how `ctvlp train` and `ctvlp config` change a recipe."""
    p.add_argument("--steps", type=int, help="optimiser steps (overrides the recipe's)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set optim.lr=1e-3 (repeatable; `ctvlp config RECIPE` "
                        "lists the fields)")
    p.add_argument("--debug", action="store_true", help="the recipe's tiny debug variant")


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("train", help="train a recipe on a prepared cache", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", required=True, choices=NAMES,
                   help="the recipe (`ctvlp config RECIPE` prints its settings)")
    p.add_argument("--data", type=Path, required=True, help="cache folder written by `ctvlp prepare`")
    p.add_argument("--out", type=Path, required=True, help="run folder")
    add_config_args(p)
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in OUT")
    p.add_argument("--no-eval", action="store_true", help="skip the zero-shot evaluation at the end")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def resolve_config(args: argparse.Namespace):
    """The recipe's config with --steps and --set applied (checked)."""
    from ctvlp.config import apply_overrides
    from ctvlp.recipes import get_recipe

    cfg = get_recipe(args.recipe, debug=args.debug)
    overrides = list(args.overrides) + ([f"steps={args.steps}"] if args.steps is not None else [])
    return apply_overrides(cfg, overrides)


def run(args: argparse.Namespace) -> int:
    import json

    from ctvlp.cli._run import headline, train_and_evaluate
    from ctvlp.data.cache import Cache
    from ctvlp.errors import BadDatasetError
    from ctvlp.train.requirements import check_preprocessing

    cfg = resolve_config(args)
    if not (args.data / "index").is_dir():
        raise BadDatasetError(args.data, "not a cache folder (no index/); run `ctvlp prepare` first")
    custom = any(o.startswith("data.preprocess") for o in args.overrides)  # then the recipe's flags are not enough
    check_preprocessing(cfg, Cache(args.data), None if custom else f"--recipe {args.recipe}" + " --debug" * args.debug)
    if not args.no_eval:  # an empty or damaged evaluation split stops the run before step 1, not after the last
        from ctvlp.data.loader import split_dataset
        from ctvlp.eval.suite import check_masks

        cache = Cache(args.data)
        for split in (cfg.eval.val_split, cfg.eval.test_split):
            split_dataset(cache, cfg.eval.sampler, split, seed=0)
        check_masks(cache, cfg.eval, cfg.eval.tasks)  # a mask task on a maskless cache: refused now, not at the end
    outcome = train_and_evaluate(cfg, args.data, args.out, None if args.no_eval else args.out / "eval",
                                 resume=args.resume, progress=not args.no_progress)
    if outcome.is_main:
        print(json.dumps(outcome.summary))
        if outcome.metrics is not None:
            print(f"zero-shot {headline(outcome.metrics)}")
            print(f"   {outcome.paths[0]}\n   {outcome.paths[-1]}")
    return 0
