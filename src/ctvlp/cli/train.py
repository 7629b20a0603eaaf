"""`ctvlp train --recipe NAME --data CACHE --out DIR [--steps N] [--set a.b=value ...] [--resume] [--debug]`

Trains a recipe on a prepared cache (`ctvlp prepare`). Writes OUT/config.yaml (the resolved config),
OUT/metrics.jsonl, OUT/tb/ (TensorBoard) and OUT/checkpoints/step-NNNNNNN.pt (the last `keep_last`,
e.g. --set keep_last=3). `ctvlp config NAME [--set ...]` prints the resolved config with every field's
help: what --set can change. Runs the same under `torchrun --nproc_per_node N -m ctvlp train ...`
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

    import yaml

    from ctvlp.config import to_dict
    from ctvlp.errors import BadDatasetError
    from ctvlp.fsutil import atomic_write_text
    from ctvlp.train import distributed
    from ctvlp.train.loop import Trainer

    cfg = resolve_config(args)
    if not (args.data / "index").is_dir():
        raise BadDatasetError(args.data, "not a cache folder (no index/); run `ctvlp prepare` first")
    from ctvlp.data.cache import Cache
    from ctvlp.train.requirements import check_preprocessing

    custom = any(o.startswith("data.preprocess") for o in args.overrides)  # then the recipe's flags are not enough
    check_preprocessing(cfg, Cache(args.data), None if custom else f"--recipe {args.recipe}" + " --debug" * args.debug)
    if not args.no_eval:  # an empty or damaged evaluation split stops the run before step 1, not after the last
        from ctvlp.data.loader import split_dataset

        cache = Cache(args.data)
        for split in (cfg.eval.val_split, cfg.eval.test_split):
            split_dataset(cache, cfg.eval.sampler, split, seed=0)
        from ctvlp.eval.suite import check_masks

        check_masks(cache, cfg.eval, cfg.eval.tasks)  # a mask task on a maskless cache: refused now, not at the end
    trainer = Trainer(cfg, args.data, args.out, resume=args.resume, progress=not args.no_progress)
    try:
        if trainer.place.is_main:
            atomic_write_text(args.out / "config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))
        summary = trainer.fit()
        if not args.no_eval and trainer.place.is_main:
            from ctvlp.eval.run import evaluate_model
            from ctvlp.fsutil import jsonable

            metrics = evaluate_model(trainer.model, trainer.cache, cfg.eval, device=trainer.place.device)
            summary["eval"] = metrics
            atomic_write_text(args.out / "eval.json", json.dumps(jsonable(metrics), indent=2, allow_nan=False))
        distributed.barrier(trainer.place)
    finally:
        distributed.teardown()
    if trainer.place.is_main:
        print(json.dumps({k: v for k, v in summary.items() if k != "eval"}))
        if "eval" in summary:
            zs, rt = summary["eval"]["zero_shot"], summary["eval"]["retrieval"]
            mean = f"{zs['mean_auroc']:.3f}" if zs["labels_in_mean"] else "n/a (every label has one class on the test split)"
            print(f"zero-shot mean AUROC {mean} over {len(zs['labels_in_mean'])} labels; "
                  f"R@5 volume->report {rt['volume_to_report']['recall@5']:.3f}, "
                  f"report->volume {rt['report_to_volume']['recall@5']:.3f}")
    return 0
