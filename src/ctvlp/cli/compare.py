"""`ctvlp compare --recipes A,B,... [--variant "NAME=RECIPE KEY=VALUE ..."] --data CACHE --out DIR
[--budget-minutes M | --steps N] [--seed S] [--set a.b=v ...]`

Trains each recipe for the same wall-clock budget on the same cache and seed and evaluates all of them
on the same held-out split. A `--variant` is a named run of a recipe with its own overrides (an
ablation: `--variant "sigvlp-rope10k=sigvlp model.vision.rope_base=10000"`); it runs after the
`--recipes` and is a row of the table like them. `--steps N` replaces the budget by a fixed step
count for every run (no probe, no clock), so that the runs of an ablation differ only in their knob.
`--resume` keeps the finished runs of an earlier, stopped comparison in DIR (same per-run command,
status ok) and runs the rest. A recipe runs at its cohort size (`ctvlp.recipes.cohort`: the demo's
model, input and batch size with the recipe's objective, sampler, positions, pooling and optimiser;
`--debug`: its tiny debug variant). Per recipe: a probe times a few steps on the cache (2 warm-up, 5
timed); `steps` is set to what fits in the budget less the `EVAL_RESERVE` (15 %) kept for
evaluation, and `max_minutes` stops training there in any case; then it trains and evaluates
(`ctvlp.cli._run.train_and_evaluate`). `--set` applies to every recipe; `--seed` is every run's.

Writes DIR/<recipe>/ (run/ with checkpoints and metrics.jsonl, config.yaml, and the evaluation: metrics.json
in docs/eval-metrics.md's layout, <task>.csv, report.html),
DIR/compare.json (per recipe: metrics, steps, samples/s, budget, seed and the command) and
DIR/compare.md (the table). A recipe that fails is recorded as failed and the others still run;
exit code 0 when all succeeded, 1 otherwise.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import shlex
import shutil
import sys
import time
import traceback
from pathlib import Path

from ctvlp.recipes import NAMES

EVAL_RESERVE = 0.15
"""Fraction of each recipe's budget left for evaluation; training gets the rest."""
PROBE_WARMUP, PROBE_TIMED = 2, 5
"""Probe steps: untimed (loader start, first allocations), then timed."""

COLUMNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("zero-shot mean AUROC", ("zeroshot", "volume", "mean_auroc")),
    ("mean F1", ("zeroshot", "volume", "mean_f1")),
    ("R@1 v->r", ("retrieval", "volume", "volume_to_report", "recall@1")),
    ("R@5 v->r", ("retrieval", "volume", "volume_to_report", "recall@5")),
    ("R@1 r->v", ("retrieval", "volume", "report_to_volume", "recall@1")),
    ("R@5 r->v", ("retrieval", "volume", "report_to_volume", "recall@5")),
    ("organ AUROC", ("organs", "mean_auroc")),
    ("seg Dice", ("segmentation", "mean_dice")),
    ("BLEU-4", ("generation", "bleu4")),
    ("ROUGE-L", ("generation", "rouge_l")),
    ("label F1", ("generation", "label_f1")),
)
"""The table's metric columns: header and key path into a recipe's metrics.json (docs/eval-metrics.md; volume
level; absent: "—")."""
MISSING = "—"


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("compare", help="train several recipes for the same wall-clock budget and tabulate them",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipes", default="", metavar="RECIPE[,RECIPE...]",
                   help=f"comma-separated, from: {', '.join(NAMES)}")
    p.add_argument("--variant", dest="variants", action="append", default=[], metavar='"NAME=RECIPE KEY=VALUE ..."',
                   help="a named run of RECIPE with these overrides on top of --set (repeatable)")
    p.add_argument("--data", type=Path, required=True, help="cache folder written by `ctvlp prepare --recipe demo` (the cohort variants' grid, 3 x 3 x 6 mm; "
                        "with --debug: `ctvlp prepare` without --recipe)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--budget-minutes", type=float, default=10.0,
                   help="wall-clock minutes per recipe, training and evaluation (default 10)")
    p.add_argument("--steps", type=int, default=None,
                   help="train every run for exactly this many steps instead of a wall-clock budget")
    p.add_argument("--seed", type=int, default=0, help="seed of every recipe's run (default 0)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field of every recipe (repeatable)")
    p.add_argument("--debug", action="store_true", help="the recipes' tiny debug variants (seconds, for tests)")
    p.add_argument("--resume", action="store_true",
                   help="keep the finished runs of DIR/compare.json that had the same command; run the others")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)
    return p


# -- inputs -------------------------------------------------------------------------------------
def recipe_names(spec: str) -> list[str]:
    """``"a, b,a"`` -> ``["a", "b"]`` (order kept, duplicates dropped)."""
    from ctvlp.config import ConfigError

    names = list(dict.fromkeys(n.strip() for n in spec.split(",") if n.strip()))
    if not names:
        raise ConfigError(f"--recipes names no recipe: {spec!r}")
    return names


@dataclasses.dataclass(frozen=True)
class Run:
    """One row of the comparison: a recipe, under a name, with overrides of its own."""

    name: str
    recipe: str
    overrides: tuple[str, ...] = ()
    spec: str | None = None
    """The ``--variant`` text it came from (None: a plain ``--recipes`` entry)."""


def parse_variant(spec: str) -> Run:
    """``"NAME=RECIPE KEY=VALUE ..."`` (shell quoting inside) -> a :class:`Run`."""
    from ctvlp.config import ConfigError

    words = shlex.split(spec)
    name, _, recipe = words[0].partition("=") if words else ("", "", "")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name) or not recipe:
        raise ConfigError(f'--variant {spec!r}: expected "NAME=RECIPE KEY=VALUE ..." (NAME: letters, digits, '
                          f'"-" and "_"), e.g. '
                          f'"sigvlp-rope10k=sigvlp model.vision.rope_base=10000"')
    return Run(name, recipe, tuple(words[1:]), spec)


def plan_runs(args: argparse.Namespace) -> list[Run]:
    """The ``--recipes`` then the ``--variant`` runs; ConfigError when none or a name repeats."""
    from ctvlp.config import ConfigError

    runs = [Run(n, n) for n in recipe_names(args.recipes)] if args.recipes.strip(", ") or not args.variants else []
    runs += [parse_variant(v) for v in args.variants]
    repeated = sorted({r.name for r in runs if [q.name for q in runs].count(r.name) > 1})
    if repeated:
        raise ConfigError(f"run names must be unique; repeated: {', '.join(repeated)}")
    return runs


def resolve_config(run: Run, args: argparse.Namespace):
    """The run's recipe at cohort size (debug size with ``--debug``) with ``--set``, the run's own
    overrides and ``--seed`` applied."""
    from ctvlp.config import apply_overrides
    from ctvlp.recipes import get_recipe
    from ctvlp.recipes.cohort import cohort_variant

    cfg = get_recipe(run.recipe, debug=True) if args.debug else cohort_variant(get_recipe(run.recipe))
    return apply_overrides(cfg, [*args.overrides, *run.overrides, f"seed={args.seed}"])


def command(args: argparse.Namespace, runs: list[Run]) -> str:
    """The `ctvlp compare` command line that reruns ``runs`` with these arguments."""
    recipes = [r.name for r in runs if r.spec is None]
    argv = ["ctvlp", "compare"] + (["--recipes", ",".join(recipes)] if recipes else [])
    argv += [x for r in runs if r.spec is not None for x in ("--variant", r.spec)]
    argv += ["--data", str(args.data), "--out", str(args.out)]
    argv += ["--steps", str(args.steps)] if args.steps else ["--budget-minutes", f"{args.budget_minutes:g}"]
    argv += ["--seed", str(args.seed)] + [x for o in args.overrides for x in ("--set", o)]
    return shlex.join(argv + (["--debug"] if args.debug else []))


# -- the budget ---------------------------------------------------------------------------------
def probe_step_seconds(cfg, cache_dir: Path, out: Path) -> float:
    """Mean seconds of a training step of ``cfg`` on the cache: PROBE_WARMUP untimed steps, then
    PROBE_TIMED timed ones (from the per-step samples/s of metrics.jsonl). ``out`` is deleted after."""
    from ctvlp.train.loop import Trainer
    from ctvlp.train.metrics_log import read_metrics

    probe = dataclasses.replace(cfg, steps=PROBE_WARMUP + PROBE_TIMED, log_every=1, ckpt_every=10**9,
                                max_minutes=0.0)
    try:
        Trainer(probe, cache_dir, out, progress=False).fit()
        timed = read_metrics(out)[PROBE_WARMUP:]
    finally:
        shutil.rmtree(out, ignore_errors=True)
    samples = cfg.data.batch_size * cfg.grad_accum
    return sum(samples / r["samples_per_s"] for r in timed) / len(timed)


def plan_steps(step_seconds: float, budget_minutes: float) -> tuple[int, float]:
    """(steps, training seconds): the steps that fit the budget less EVAL_RESERVE (at least 1)."""
    train_seconds = 60.0 * budget_minutes * (1.0 - EVAL_RESERVE)
    return max(1, int(train_seconds // step_seconds)), train_seconds


def budgeted(cfg, steps: int, train_seconds: float):
    """``cfg`` training for ``steps`` with a hard stop at ``train_seconds``; warm-up at most 10 % of it."""
    optim = dataclasses.replace(cfg.optim, warmup_steps=min(cfg.optim.warmup_steps, steps // 10))
    return dataclasses.replace(cfg, steps=steps, max_minutes=train_seconds / 60.0, optim=optim)


def fixed_steps(cfg, steps: int):
    """``cfg`` training for exactly ``steps`` (no clock); warm-up at most 10 % of it."""
    optim = dataclasses.replace(cfg.optim, warmup_steps=min(cfg.optim.warmup_steps, steps // 10))
    return dataclasses.replace(cfg, steps=steps, max_minutes=0.0, optim=optim)


# -- one recipe ---------------------------------------------------------------------------------
def run_recipe(name: str, cfg, args: argparse.Namespace) -> dict:
    """Probe, plan, train and evaluate one run in DIR/<name>/ (``--steps``: no probe, that many steps);
    the record of compare.json."""
    import yaml

    from ctvlp.cli._run import train_and_evaluate
    from ctvlp.config import to_dict

    out = args.out / name
    for stale in ("run", "probe"):
        shutil.rmtree(out / stale, ignore_errors=True)
    if args.steps:
        step_seconds, steps, train_budget = None, args.steps, None
        cfg = fixed_steps(cfg, steps)
        print(f"\n== {name}: {steps} steps", flush=True)
    else:
        step_seconds = probe_step_seconds(cfg, args.data, out / "probe")
        steps, train_budget = plan_steps(step_seconds, args.budget_minutes)
        cfg = budgeted(cfg, steps, train_budget)
        print(f"\n== {name}: {step_seconds:.3f} s/step in the probe -> {steps} steps in {train_budget:.0f} s",
              flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    start = time.perf_counter()
    metrics = train_and_evaluate(cfg, args.data, out / "run", out, progress=not args.no_progress).metrics
    train_seconds = metrics["training"]["seconds"]
    samples = metrics["step"] * cfg.data.batch_size * cfg.grad_accum
    return {"status": "ok", "steps": metrics["step"], "planned_steps": steps,
            "samples_per_s": samples / max(train_seconds, 1e-9),
            "train_seconds": train_seconds, "train_budget_seconds": train_budget,
            "probe_step_seconds": step_seconds, "seconds": time.perf_counter() - start,
            "run_dir": str(out / "run"), "metrics": metrics}


def run_safely(run: Run, cfg, args: argparse.Namespace) -> dict:
    """``run_recipe``'s record, or a failed one with the error (the traceback goes to stderr)."""
    name = run.name
    common = {"recipe": name, "base_recipe": run.recipe, "overrides": list(run.overrides),
              "budget_minutes": None if args.steps else args.budget_minutes, "seed": args.seed,
              "command": command(args, [run])}
    try:
        return {**common, **run_recipe(name, cfg, args)}
    except Exception as err:  # noqa: BLE001 - one recipe's failure must not stop the comparison
        traceback.print_exc(file=sys.stderr)
        reason = " ".join(str(err).split()) or type(err).__name__
        print(f"ctvlp compare: {name} failed: {reason}", file=sys.stderr)
        return {**common, "status": "failed", "error": f"{type(err).__name__}: {reason}", "reason": reason}


# -- outputs ------------------------------------------------------------------------------------
def metric(metrics: dict, path: tuple[str, ...]):
    """The value at ``path`` in a metrics dict, or None when the recipe does not produce it."""
    value = metrics
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def table_row(record: dict) -> list[str]:
    if record["status"] != "ok":
        reason = record["reason"].replace("|", "\\|")
        return [record["recipe"], f"failed: {reason}"] + [MISSING] * (len(COLUMNS) + 1)
    values = [metric(record["metrics"], path) for _, path in COLUMNS]
    return [record["recipe"], str(record["steps"]), f"{record['samples_per_s']:.1f}",
            *(MISSING if v is None else f"{v:.3f}" for v in values)]


def markdown(summary: dict) -> str:
    header = ["recipe", "steps", "samples/s", *(title for title, _ in COLUMNS)]
    rows = [header, ["---"] * len(header)] + [table_row(r) for r in summary["recipes"].values()]
    ok = [r["metrics"] for r in summary["recipes"].values() if r["status"] == "ok"]
    sizes = [metric(ok[0], ("training", "train_volumes")), metric(ok[0], ("n", "test_volumes"))] if ok else [None]
    cohort = f"; {sizes[0]} training and {sizes[1]} held-out volumes" if None not in sizes else ""
    if summary["steps"]:
        title, how = "Recipes at an equal step count", f"{summary['steps']} steps per run"
    else:
        title = "Recipes at an equal wall-clock budget"
        how = f"{summary['budget_minutes']:g} min per recipe ({100 * (1 - EVAL_RESERVE):.0f} % for training)"
    variants = "".join(f"\n- `{r['recipe']}`: {r['base_recipe']} with `{' '.join(r['overrides'])}`"
                       for r in summary["recipes"].values() if r.get("overrides"))
    return (f"# {title}\n\n`{summary['command']}`\n\n"
            f"{how}, seed {summary['seed']}, cache `{summary['data']}`{cohort}. Zero-shot and retrieval on the "
            f"held-out split; \"{MISSING}\": the recipe does not produce the metric.\n\n"
            + "".join("| " + " | ".join(row) + " |\n" for row in rows)
            + (f"\nVariants:{variants}\n" if variants else ""))


def finished_runs(path: Path) -> dict[str, dict]:
    """The runs of an earlier compare.json that finished (status ok), by name; {} when there is none."""
    from ctvlp.errors import CtvlpError

    if not path.is_file():
        return {}
    try:
        recipes = json.loads(path.read_text())["recipes"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise CtvlpError(path, f"--resume: not a compare.json ({err})") from None
    return {name: r for name, r in recipes.items() if r.get("status") == "ok"}


def write_outputs(summary: dict, out: Path) -> None:
    from ctvlp.fsutil import atomic_write_text, jsonable

    atomic_write_text(out / "compare.json", json.dumps(jsonable(summary), indent=2, allow_nan=False))
    atomic_write_text(out / "compare.md", markdown(summary))


def run(args: argparse.Namespace) -> int:
    from ctvlp.errors import BadDatasetError, CtvlpError

    runs = plan_runs(args)
    if not args.budget_minutes > 0:
        raise CtvlpError(None, f"--budget-minutes must be > 0, got {args.budget_minutes:g}")
    if args.steps is not None and args.steps < 1:
        raise CtvlpError(None, f"--steps must be >= 1, got {args.steps}")
    if not (args.data / "index").is_dir():
        raise BadDatasetError(args.data, "not a cache folder (no index/); run `ctvlp prepare` first")
    configs = {run: resolve_config(run, args) for run in runs}  # every bad name or --set before training
    args.out.mkdir(parents=True, exist_ok=True)
    summary = {"command": command(args, runs), "data": str(args.data),
               "budget_minutes": None if args.steps else args.budget_minutes, "steps": args.steps,
               "seed": args.seed, "eval_reserve": EVAL_RESERVE, "debug": args.debug, "recipes": {}}
    done = finished_runs(args.out / "compare.json") if args.resume else {}
    for run, cfg in configs.items():
        earlier = done.get(run.name)
        if earlier is not None and earlier["command"] == command(args, [run]):
            print(f"\n== {run.name}: kept from the earlier comparison (--resume)", flush=True)
            summary["recipes"][run.name] = earlier
        else:
            summary["recipes"][run.name] = run_safely(run, cfg, args)
        write_outputs(summary, args.out)  # after every recipe: a stopped comparison keeps what it has
    failed = [n for n, r in summary["recipes"].items() if r["status"] != "ok"]
    print(f"\n{markdown(summary)}\n{args.out / 'compare.json'}\n{args.out / 'compare.md'}")
    if failed:
        print(f"ctvlp compare: failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0
