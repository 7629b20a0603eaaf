"""`ctvlp eval --checkpoint CKPT --data CACHE --out DIR`: the standard tables of a trained model.

Zero-shot classification (CT-RATE 18- or 16-label protocol, thresholds on the validation split),
volume<->report retrieval and a linear probe, at volume and scan level, with 95 % intervals from
patient resamples; plus the checkpoint's own `eval.tasks` (organs, segmentation, generation, ...): a
recipe's are its paper's, so that by default the run fills the paper's table (`paper_rows`: each number
the paper reports beside ours, or why ctvlp does not compute it; `ctvlp.eval.paper`).
Writes DIR/metrics.json (docs/eval-metrics.md), DIR/<task>.csv, DIR/paper_rows.csv and DIR/report.html.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ctvlp.cli._model import add_device_arg
from ctvlp.data.labels import PROTOCOLS
from ctvlp.data.prompt_names import CORPUS, LABEL_HEAD, prompt_style_names
from ctvlp.eval.names import CORE_TASKS, EVAL_TASKS

TASKS = (*CORE_TASKS, *EVAL_TASKS)


def task_list(text: str) -> tuple[str, ...]:
    """`--tasks a,b` -> ("a", "b") (duplicates dropped); a usage error naming the tasks for an unknown one."""
    tasks = tuple(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise argparse.ArgumentTypeError(f"{'unknown task(s) ' + ', '.join(unknown) if unknown else 'no task'} "
                                         f"in {text!r}; tasks: {', '.join(TASKS)}")
    return tasks


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("eval", help="evaluate a checkpoint: zero-shot, retrieval, probe (+ its eval tasks)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, required=True, help="checkpoint file or run folder (latest)")
    p.add_argument("--data", type=Path, required=True, help="prepared cache (ctvlp prepare)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--tasks", type=task_list, metavar="TASK[,TASK...]",
                   help=f"comma-separated, from: {', '.join(TASKS)} (default: {','.join(CORE_TASKS)} + the "
                        "checkpoint's eval.tasks + its recipe's paper tasks, ctvlp.eval.paper)")
    p.add_argument("--protocol", choices=tuple(PROTOCOLS), default="18",
                   help="label protocol: 18 (CT-RATE) or 16 (fVLM/HLIP); default 18")
    p.add_argument("--prompts", type=Path, help="prompt YAML file replacing the packaged one")
    p.add_argument("--prompt-style", metavar="STYLE",
                   help=f"prompt style: {', '.join(prompt_style_names())} or a style of the --prompts file "
                        "(default: the checkpoint's eval.prompt_style)")
    p.add_argument("--bootstrap", type=int, default=1000, help="patient resamples per interval (default 1000)")
    p.add_argument("--val-split", help="split choosing thresholds and C (default: the checkpoint's)")
    p.add_argument("--test-split", help="split the numbers are reported on (default: the checkpoint's)")
    p.add_argument("--train-split", help="split the linear probe is fitted on (default: the checkpoint's training split)")
    p.add_argument("--overlays", type=int, default=2,
                   help="segmentation tasks: test volumes drawn as overlays in report.html (default 2)")
    p.add_argument("--real-dir", type=Path, help="real_masks: folder of the real cases (tests/data/real of a ctvlp "
                                                 "checkout; default: the checkpoint's eval.real_dir)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    add_device_arg(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar (shown on a terminal, on stderr)")
    p.set_defaults(func=run)
    return p


def check_prompt_style(style: str | None, prompts: Path | None) -> None:
    """CtvlpError naming the styles when ``style`` is neither a style of the prompt file (``prompts``, or
    the packaged one) nor one made for the model (label_head, corpus)."""
    from ctvlp.errors import CtvlpError

    if style is None:
        return
    if prompts is None:
        names = prompt_style_names()
    else:
        from ctvlp.data.prompts import load_prompts

        names = (*load_prompts(prompts).styles, LABEL_HEAD, CORPUS)
    if style not in names:
        raise CtvlpError(prompts, f"--prompt-style {style!r} is not a style of "
                                  f"{'this file' if prompts else 'the packaged prompts'}; styles: {', '.join(names)}")


def _summary(metrics: dict) -> list[str]:
    def ci(value, interval) -> str:
        fmt = lambda x: "n/a" if x is None else f"{x:.3f}"  # noqa: E731
        return fmt(value) + (f" [{fmt(interval[0])}, {fmt(interval[1])}]" if interval else "")

    lines = []
    if "zeroshot" in metrics:
        for level in ("volume", "scan"):
            zs = metrics["zeroshot"][level]
            lines.append(f"zero-shot macro AUROC ({level}, {len(zs['labels_in_mean'])} labels)  "
                         f"{ci(zs['mean_auroc'], zs.get('mean_auroc_ci'))}")
    if "retrieval" in metrics:
        for level in ("volume", "scan"):
            for d in ("volume_to_report", "report_to_volume"):
                r = metrics["retrieval"][level][d]
                lines.append(f"R@5 {d.replace('_', ' ')} ({level})  {ci(r['recall@5'], r.get('recall@5_ci'))}")
    if "probe" in metrics:
        pr = metrics["probe"]
        lines.append(f"linear probe macro AUROC ({len(pr['labels_in_mean'])} labels)  "
                     f"{ci(pr['mean_auroc'], pr.get('mean_auroc_ci'))}")
    width = max(len(l.split("  ")[0]) for l in lines) if lines else 0
    return [f"  {l.split('  ')[0]:<{width}}  {l.split('  ', 1)[1]}" for l in lines]


def run(args: argparse.Namespace) -> int:
    import json

    from ctvlp.errors import CtvlpError

    if args.bootstrap < 0 or args.overlays < 0:
        raise CtvlpError(None, f"--bootstrap and --overlays must be >= 0, got {args.bootstrap}, {args.overlays}")
    check_prompt_style(args.prompt_style, args.prompts)

    from ctvlp.data.cache import Cache
    from ctvlp.eval.outputs import write_outputs
    from ctvlp.eval.paper import format_rows, paper_tasks
    from ctvlp.eval.suite import SuiteConfig, describe_run, run_suite, with_overrides
    from ctvlp.recipes.run import load_trained

    trained = load_trained(args.checkpoint, args.device)
    cache = Cache(args.data)
    eval_cfg = with_overrides(trained.config.eval, val_split=args.val_split, test_split=args.test_split,
                              prompt_style=args.prompt_style, overlays=args.overlays,
                              real_dir=None if args.real_dir is None else str(args.real_dir))
    # the checkpoint's tasks and its paper's (an older checkpoint, or a compare run's, may lack some)
    tasks = args.tasks or tuple(dict.fromkeys((*CORE_TASKS, *trained.config.eval.tasks,
                                               *paper_tasks(trained.config.recipe))))
    cfg = SuiteConfig(tasks=tasks, protocol=args.protocol,
                      prompts=None if args.prompts is None else str(args.prompts), n_bootstrap=args.bootstrap,
                      seed=args.seed, train_split=args.train_split or trained.config.data.train_split)
    result = run_suite(trained.model, cache, eval_cfg, cfg, args.device, progress=not args.no_progress)
    describe_run(result, trained.config.recipe, trained.step, str(trained.path))
    paths = write_outputs(args.out, result)
    metrics = json.loads(paths[0].read_text())
    print(f"ctvlp eval: {trained.config.recipe} step {trained.step} on {metrics['n']['test_volumes']} test volumes "
          f"({metrics['n']['test_patients']} patients), protocol {cfg.protocol}, "
          f"{cfg.n_bootstrap} patient resamples, {metrics['seconds']['total']:.1f} s")
    print("\n".join(_summary(metrics)))
    print(f"paper table ({metrics['recipe']}):")
    print("\n".join(format_rows(metrics["paper_rows"])))
    print("wrote:\n" + "\n".join(f"  {p}" for p in paths))
    return 0
