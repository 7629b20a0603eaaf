"""Train a config on a prepared cache, then evaluate the trained model with the one evaluator: what
`ctvlp train`, `ctvlp demo` and `ctvlp compare` each run (:func:`train_and_evaluate`).

The run folder gets config.yaml (the resolved config), metrics.jsonl, tb/ and checkpoints/ (the
:class:`~ctvlp.train.loop.Trainer`'s); the evaluation folder gets metrics.json, one CSV per task and
report.html (:func:`ctvlp.eval.outputs.write_outputs`), in the layout of docs/eval-metrics.md with
``training`` filled in. Only the main process writes and evaluates; under `torchrun` the others wait.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from ctvlp.config import to_dict
from ctvlp.eval.outputs import write_outputs
from ctvlp.eval.suite import SuiteConfig, describe_run, run_suite
from ctvlp.fsutil import atomic_write_text
from ctvlp.models.store import latest_checkpoint
from ctvlp.train import distributed
from ctvlp.train.loop import Trainer
from ctvlp.train.metrics_log import read_metrics


@dataclass
class Outcome:
    """What a training run and its evaluation produced."""

    summary: dict
    """:meth:`Trainer.fit`'s summary (``steps``, ``bad_steps``, ``epoch``)."""
    train_seconds: float
    """Wall-clock seconds of :meth:`Trainer.fit`."""
    metrics: dict | None
    """metrics.json as written (None: not evaluated, or not the main process)."""
    paths: list[Path]
    """The evaluation's files (metrics.json first); [] when not evaluated."""
    is_main: bool
    """Whether this process is the main one (the one that prints)."""


def train_and_evaluate(cfg, data: Path, run_dir: Path, eval_dir: Path | None, resume: bool = False,
                       progress: bool = True, training: dict | None = None) -> Outcome:
    """Train ``cfg`` on the cache ``data`` into ``run_dir`` (``resume``: from its latest checkpoint), then
    evaluate on the cache's held-out split into ``eval_dir`` (None: no evaluation) with
    :meth:`SuiteConfig.after_training`; ``training``: extra keys for metrics.json's ``training`` (e.g. the
    demo's data preparation seconds)."""
    trainer = Trainer(cfg, data, run_dir, resume=resume, progress=progress)
    metrics, paths = None, []
    try:
        if trainer.place.is_main:
            atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))
        start = time.perf_counter()
        summary = trainer.fit()
        train_seconds = time.perf_counter() - start
        if eval_dir is not None and trainer.place.is_main:
            print(f"\n== evaluate on the held-out split ({cfg.eval.test_split}; thresholds on "
                  f"{cfg.eval.val_split}) -> {eval_dir}", flush=True)
            result = run_suite(trainer.model, trainer.cache, cfg.eval, SuiteConfig.after_training(cfg.eval),
                               trainer.place.device, progress=progress)
            checkpoint = latest_checkpoint(run_dir / "checkpoints")
            describe_run(result, cfg.recipe, trainer.step, None if checkpoint is None else str(checkpoint),
                         {"run_dir": str(run_dir), "train_volumes": len(trainer.loader.dataset),
                          "seconds": train_seconds, **(training or {})})
            result.records = read_metrics(run_dir)
            paths = write_outputs(eval_dir, result)
            metrics = json.loads(paths[0].read_text())
        distributed.barrier(trainer.place)
    finally:
        distributed.teardown()
    return Outcome(summary, train_seconds, metrics, paths, trainer.place.is_main)


def headline(metrics: dict) -> str:
    """One line of a run's metrics: zero-shot mean AUROC over its labels, R@5 both ways (volume level)."""
    zs, rt = metrics["zeroshot"]["volume"], metrics["retrieval"]["volume"]
    mean = f"{zs['mean_auroc']:.3f}" if zs["labels_in_mean"] else "n/a (every label has one class on the test split)"
    return (f"mean AUROC {mean} over {len(zs['labels_in_mean'])} labels; "
            f"R@5 volume->report {rt['volume_to_report']['recall@5']:.3f}, "
            f"report->volume {rt['report_to_volume']['recall@5']:.3f}")
