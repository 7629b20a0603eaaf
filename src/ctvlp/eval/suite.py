"""The one evaluator (:func:`run_suite`): zero-shot classification, retrieval and a linear probe with
patient-bootstrap intervals, at volume and scan level, plus the :data:`EXTRA_TASKS` (organs, segmentation,
generation, probes, real masks, slice-count robustness). `ctvlp eval` runs it on a checkpoint; `ctvlp train`,
`ctvlp demo` and `ctvlp compare` run it after training (:meth:`SuiteConfig.after_training`: zero-shot,
retrieval and ``eval.tasks``, no intervals); the robustness cells re-run it (:func:`evaluate_cell`).
Every run's metrics follow one versioned layout (:data:`SCHEMA_VERSION`, docs/eval-metrics.md), written by
:func:`ctvlp.eval.outputs.write_outputs`.

Every volume of the validation and test splits (and, for the probe, the training split) is encoded
once (:func:`ctvlp.eval.run.encode_split`), every prompt once. Thresholds and the probe's C come from
the validation split only; every number is computed on the test split. Intervals resample *patients*
with replacement and take all their rows (:func:`ctvlp.eval.metrics.cluster_resampler`): CT-RATE has
several reconstructions per scan and several scans per patient, which are not independent. Scan
level follows :mod:`ctvlp.eval.aggregate`. The keys of the returned metrics are documented in
``docs/eval-metrics.md`` (``SCHEMA_VERSION``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ctvlp import __version__
from ctvlp.data.cache import Cache
from ctvlp.data.labels import PROTOCOLS
from ctvlp.data.manifest import label_names_of
from ctvlp.data.preprocess import window
from ctvlp.data.prompt_names import CORPUS, LABEL_HEAD
from ctvlp.data.prompts import prompt_set, split_reports
from ctvlp.data.sampling import BODY
from ctvlp.errors import BadDatasetError, CtvlpError
from ctvlp.eval.aggregate import RULE as SCAN_RULE
from ctvlp.eval.aggregate import Grouping, scan_embeddings, scan_scores
from ctvlp.eval.config import EvalConfig
from ctvlp.eval.generation import evaluate_generation
from ctvlp.eval.generation_probe import evaluate_generation_probe
from ctvlp.eval.names import CORE_TASKS
from ctvlp.eval.organs import evaluate_organs
from ctvlp.eval.paper import paper_rows
from ctvlp.eval.probe import Split, linear_probe
from ctvlp.eval.real_masks import evaluate_real_masks
from ctvlp.eval.retrieval import rank_summary, recall_intervals, retrieval_ranks
from ctvlp.eval.robustness import evaluate_robustness
from ctvlp.eval.run import Encoded, chance_recall, encode_split
from ctvlp.eval.seg_probe import evaluate_seg_probe, trained_probe
from ctvlp.eval.segmentation import evaluate_segmentation
from ctvlp.eval.zeroshot import evaluate_zero_shot
from ctvlp.models.prompting import prompt_scorer
from ctvlp.progress import progress_bar

SCHEMA_VERSION = 3
"""Version of the metrics.json layout described in docs/eval-metrics.md; bumped on any change (2: ``paper_rows``;
3: one layout for every command -- ``recipe``, ``step`` and ``checkpoint`` always, ``training`` after a
training run, robustness cells in this layout)."""
TASK_NEEDS = {"segmentation": ("seg", "a voxel head (model.seg: recipes segvl, uniferum)"),
              "generation": ("decoder", "a report decoder (model.decoder: recipe colipri; for any "
                                             "model, generation_probe trains one on the frozen encoder)")}
"""Task -> (ModelConfig field that must be set, what it is) for tasks only some models can do."""
KS = (1, 5, 10, 50)
RETRIEVAL_RULE = ("volume level: a hit is any reconstruction of the query's scan (groups = scans); scan level: "
                  "one embedding per scan, normalised mean of its reconstructions'; pessimistic ties; intervals "
                  "resample query patients with the gallery fixed")


@dataclass
class SuiteConfig:
    """What `ctvlp eval` computes (the model's own settings come from its ``EvalConfig``)."""

    tasks: tuple[str, ...] = CORE_TASKS
    """Core tasks (``zeroshot``, ``retrieval``, ``probe``) and names of ``EXTRA_TASKS``."""
    protocol: str = "18"
    """Label protocol: a key of :data:`PROTOCOLS`."""
    prompts: str | None = None
    """Prompt YAML file replacing the packaged one (None: packaged)."""
    n_bootstrap: int = 1000
    """Patient resamples per interval (0: no intervals)."""
    level: float = 0.95
    """Coverage of the percentile intervals."""
    seed: int = 0
    """Seed of the bootstrap."""
    train_split: str = "train"
    """Split the linear probe is fitted on."""
    examples: int = 3
    """Retrieval examples kept for the report."""
    volumes: int = 6
    """Test volumes drawn in the report (middle slice, report, the model's zero-shot findings); 0: none."""

    @classmethod
    def after_training(cls, eval_cfg: EvalConfig) -> SuiteConfig:
        """What `ctvlp train`, `ctvlp demo` and `ctvlp compare` evaluate at the end of training: zero-shot and
        retrieval plus the run's ``eval.tasks``, without intervals (``ctvlp eval`` on the checkpoint adds them
        and the linear probe)."""
        return cls(tasks=("zeroshot", "retrieval", *eval_cfg.tasks), n_bootstrap=0)


@dataclass
class SuiteResult:
    """Metrics (JSON-able after ``jsonable``) and what the report draws."""

    metrics: dict
    roc: dict = field(default_factory=dict)
    """Label -> (test scores (N,), labels (N,)) of the available volumes (volume level)."""
    examples: list = field(default_factory=list)
    """Retrieval examples: {query, retrieved: [(report, correct)]}."""
    overlays: dict = field(default_factory=dict)
    """Task -> the ``overlays`` list its metrics carried (popped from the metrics; see docs/eval-metrics.md)."""
    test: Encoded | None = None
    """The test split as encoded."""
    scores: np.ndarray | None = None
    """(N, L) volume-level zero-shot scores of the test split, L = ``metrics["protocol"]["labels"]`` (None
    without ``zeroshot``)."""
    volumes: list = field(default_factory=list)
    """Test volumes for the report: {id, image (D, H, W) windowed, report, predicted (labels at or above their
    threshold)}."""
    records: list = field(default_factory=list)
    """The training run's metrics.jsonl records (the report's training curve; empty for a checkpoint)."""


# -- the extra tasks: (model, cache, eval config, device, suite config) -> the task's metrics ---------------
def _organs(model, cache: Cache, cfg: EvalConfig, device: torch.device, suite: SuiteConfig | None = None) -> dict:
    sampler = dataclasses.replace(cfg.sampler, mode="chunk", chunk_depth=cfg.organ_chunk_depth, max_slices=None)
    return evaluate_organs(model, cache, sampler, cfg.val_split, cfg.test_split, device, batch_size=cfg.batch_size)


def _segmentation(model, cache: Cache, cfg: EvalConfig, device: torch.device, suite: SuiteConfig | None = None
                  ) -> dict:
    return evaluate_segmentation(model, cache, cfg.sampler, cfg.test_split, device, max_volumes=cfg.task_volumes,
                                 hd95=cfg.segmentation_hd95, overlays=cfg.overlays)


def _generation(model, cache: Cache, cfg: EvalConfig, device: torch.device, suite: SuiteConfig | None = None) -> dict:
    return evaluate_generation(model, cache, cfg.sampler, cfg.test_split, device, max_volumes=cfg.task_volumes,
                               batch_size=cfg.batch_size)


def _generation_probe(model, cache: Cache, cfg: EvalConfig, device: torch.device, suite: SuiteConfig | None = None
                      ) -> dict:
    return evaluate_generation_probe(model, cache, cfg, device)


def _robustness(model, cache: Cache, cfg: EvalConfig, device: torch.device, suite: SuiteConfig | None = None) -> dict:
    """The robustness grid, each cell re-running :func:`evaluate_cell` with the suite's protocol and prompts."""
    suite = suite or SuiteConfig()
    cell = functools.partial(evaluate_cell, protocol=suite.protocol, prompts=suite.prompts)
    return evaluate_robustness(model, cache, cfg, cell, device)


def _seg_probe(model, cache: Cache, cfg: EvalConfig, device: torch.device, suite: SuiteConfig | None = None) -> dict:
    return evaluate_seg_probe(model, cache, cfg, device)


def _real_masks(model, cache: Cache, cfg: EvalConfig, device: torch.device, suite: SuiteConfig | None = None) -> dict:
    probe = trained_probe(model, cache, cfg, device) if "seg_probe" in cfg.tasks else None
    return evaluate_real_masks(model, cache.config, cfg.sampler, device, cfg.real_dir, probe,
                               hd95=cfg.segmentation_hd95, batch_size=cfg.batch_size, overlays=cfg.overlays > 0)


EXTRA_TASKS: dict[str, Callable[..., dict]] = {
    "organs": _organs, "segmentation": _segmentation, "generation": _generation, "robustness": _robustness,
    "seg_probe": _seg_probe, "real_masks": _real_masks, "generation_probe": _generation_probe}
"""``EvalConfig.tasks`` -> function(model, cache, eval config, device, suite config) -> the task's metrics (the
names are :data:`ctvlp.eval.names.EVAL_TASKS`)."""


def check_tasks(tasks, model) -> tuple[str, ...]:
    """The tasks, or CtvlpError for an unknown one or one ``model`` cannot do."""
    known = (*CORE_TASKS, *EXTRA_TASKS)
    unknown = [t for t in tasks if t not in known]
    if unknown:
        raise CtvlpError(None, f"unknown task(s) {unknown}; tasks: {', '.join(known)}")
    for task in tasks:
        need = TASK_NEEDS.get(task)
        if need and getattr(model.cfg, need[0], None) is None:
            raise CtvlpError(None, f"task {task!r} needs {need[1]}, and this checkpoint's model has none")
    return tuple(dict.fromkeys(tasks))


MASK_TASKS = ("segmentation", "seg_probe")
"""Tasks scored (and, for the probe, trained) on the cache's organ masks."""


def check_masks(cache: Cache, eval_cfg: EvalConfig, tasks) -> None:
    """CtvlpError naming the fix when one of ``tasks`` needs organ masks (:data:`MASK_TASKS`) and a split it
    reads (``test_split``; ``probe_split`` for ``seg_probe``) has no volume with a mask other than the body
    mask (plain CT-RATE has none: SigVLP's segmentation probe then needs RadGenome-ChestCT or
    TotalSegmentator masks)."""
    need = [t for t in tasks if t in MASK_TASKS]
    splits = dict.fromkeys([eval_cfg.test_split] + ([eval_cfg.probe_split] if "seg_probe" in need else []))
    for split in splits if need else ():
        ids = cache.index.loc[cache.index["split"] == split, "id"]
        if not any(set(cache.volume(str(v)).mask_names) - {BODY} for v in ids):
            rest = [t for t in tasks if t not in MASK_TASKS]
            extra = ",".join(t for t in rest if t not in CORE_TASKS)
            raise CtvlpError(cache.root, f"task(s) {', '.join(need)} need organ masks and split {split!r} of this "
                                         f"cache has none; leave them out (ctvlp eval --tasks {','.join(rest)}; "
                                         f"ctvlp train --set 'eval.tasks=[{extra}]' "
                                         f"or --no-eval): the paper rows they fill then read 'not computed'")


def protocol_labels(protocol: str, cache: Cache) -> tuple[list[str], dict[str, str]]:
    """(the protocol's labels the cache has, {label the cache lacks: reason}); CtvlpError on an
    unknown protocol or when the cache has none of its labels."""
    if protocol not in PROTOCOLS:
        raise CtvlpError(None, f"unknown protocol {protocol!r}; protocols: {', '.join(PROTOCOLS)}")
    have = set(label_names_of(cache.index.columns))
    labels = [name for name in PROTOCOLS[protocol] if name in have]
    skipped = {name: "not a label column of the cache" for name in PROTOCOLS[protocol] if name not in have}
    if not labels:
        raise BadDatasetError(cache.root, f"has none of the {protocol} labels of protocol {protocol!r}")
    return labels, skipped


def check_splits(cache: Cache, splits: list[str]) -> None:
    """BadDatasetError naming the cache when one of ``splits`` has no volume."""
    have = cache.index["split"].value_counts().to_dict()
    missing = [s for s in dict.fromkeys(splits) if not have.get(s)]
    if missing:
        raise BadDatasetError(cache.root, f"no volume in split(s) {missing}; the cache has {have}")


def check_prompts(path: str | None, style: str, labels: list[str], model=None, reports=None):
    """The PromptSet of ``path`` (None: packaged), or CtvlpError naming the file when it does not
    parse, lacks ``style`` or has no templates for one of ``labels``. Style :data:`LABEL_HEAD` needs no
    prompts (None) but a ``model`` with a label head (CtvlpError otherwise); style ``corpus`` is the
    model's own mined one, else mined from ``reports()`` (:func:`ctvlp.data.prompts.prompt_set`)."""
    if style == LABEL_HEAD:
        if model is not None and not getattr(model.cfg, "label_prompts", False):
            raise CtvlpError(None, f"prompt style {LABEL_HEAD!r} scores with the model's label head, and this "
                                   "checkpoint's model has none (recipe uniferum has one)")
        return None
    where = path or "packaged prompts.yaml"
    # CtvlpError(file, bad prompt file) when it does not parse
    prompts = prompt_set(style, labels, path, stored=getattr(model, "prompts", None), reports=reports)
    if style not in prompts.styles:
        raise CtvlpError(where, f"no prompt style {style!r}; styles: {sorted(prompts.styles)}")
    lacking = [label for label in labels if not prompts.styles[style].covers(label)]
    if lacking:
        raise CtvlpError(where, f"prompt style {style!r} has no templates for label(s) {lacking}")
    return prompts


def _columns(enc: Encoded, cols: list[int]) -> tuple[np.ndarray, np.ndarray]:
    return enc.labels[:, cols], enc.available[:, cols]


def zero_shot_levels(score, val: Encoded, test: Encoded, cols: list[int], labels: list[str], cfg: SuiteConfig,
                     ) -> tuple[dict, np.ndarray]:
    """{"volume": ..., "scan": ..., "scan_rule"} zero-shot metrics, and the volume-level test scores (N, L)."""
    scores = {"val": score(val.image_emb), "test": score(test.image_emb)}  # (N, L) each
    boot = {"n_bootstrap": cfg.n_bootstrap, "seed": cfg.seed, "level": cfg.level}
    volume = evaluate_zero_shot(scores["val"], *_columns(val, cols), scores["test"], *_columns(test, cols), labels,
                                clusters=test.patients, **boot)
    scan = {}
    for name, enc in (("val", val), ("test", test)):
        g = Grouping.of(enc.scans)
        scan[name] = (*scan_scores(scores[name], *_columns(enc, cols), g), np.asarray(enc.patients)[g.first])
    scan_level = evaluate_zero_shot(*scan["val"][:3], *scan["test"][:3], labels, clusters=scan["test"][3], **boot)
    return {"volume": volume, "scan": scan_level, "scan_rule": SCAN_RULE}, scores["test"]


def _directions(image: torch.Tensor, report: torch.Tensor, groups, patients, cfg: SuiteConfig) -> dict:
    out = {}
    for name, (q, g) in {"volume_to_report": (image, report), "report_to_volume": (report, image)}.items():
        ranks = retrieval_ranks(q, g, groups)
        out[name] = rank_summary(ranks, KS)
        if cfg.n_bootstrap > 0:
            out[name].update(recall_intervals(ranks, KS, cfg.n_bootstrap, cfg.seed, patients, cfg.level))
    return out


def retrieval_levels(test: Encoded, cfg: SuiteConfig) -> tuple[dict, list]:
    """Volume- and scan-level retrieval both ways with patient intervals, and a few scan-level examples."""
    g = Grouping.of(test.scans)
    image, report = scan_embeddings(test.image_emb, g), scan_embeddings(test.report_emb, g)  # (S, D)
    scan_patients = np.asarray(test.patients)[g.first]
    metrics = {"volume": _directions(test.image_emb, test.report_emb, test.scans, test.patients, cfg),
               "scan": _directions(image, report, None, scan_patients, cfg),
               "chance_recall@5": {"volume": chance_recall(test.scans, 5), "scan": chance_recall(g.names, 5)},
               "rule": RETRIEVAL_RULE}
    texts = [test.texts[i] for i in g.first]
    top = (image @ report.T).topk(min(3, len(texts)), dim=1).indices  # (S, 3) best reports per scan
    examples = [{"query": texts[i], "scan": g.names[i],
                 "retrieved": [(texts[j], g.names[j], j == i) for j in top[i].tolist()]}
                for i in range(min(cfg.examples, len(texts)))]
    return metrics, examples


@dataclass
class _Request:
    """A checked request: the tasks, the eval config they see, the protocol's labels and the prompts."""

    tasks: tuple[str, ...]
    eval_cfg: EvalConfig
    labels: list[str]
    skipped: dict[str, str]
    prompts: object


def check_request(model, cache: Cache, eval_cfg: EvalConfig, cfg: SuiteConfig) -> _Request:
    """CtvlpError for an unknown task or protocol, a task the model cannot do, a missing split or mask, or a
    prompt file that does not parse or lacks a label; else the checked request."""
    tasks = check_tasks(cfg.tasks, model)
    # the extra tasks see the suite's task list (robustness repeats them, real_masks runs the probe with seg_probe)
    eval_cfg = dataclasses.replace(eval_cfg, tasks=tuple(t for t in tasks if t not in CORE_TASKS))
    labels, skipped = protocol_labels(cfg.protocol, cache)
    check_splits(cache, [eval_cfg.val_split, eval_cfg.test_split] + ([cfg.train_split] if "probe" in tasks else []))
    check_masks(cache, eval_cfg, tasks)
    if "zeroshot" in tasks and eval_cfg.prompt_style == CORPUS and CORPUS not in model.prompts:
        check_splits(cache, [eval_cfg.corpus_split])  # the style is mined from its reports
    reports = functools.partial(split_reports, cache, eval_cfg.corpus_split)
    prompts = check_prompts(cfg.prompts, eval_cfg.prompt_style, labels, model, reports) if "zeroshot" in tasks else None
    return _Request(tasks, eval_cfg, labels, skipped, prompts)


def run_suite(model, cache: Cache, eval_cfg: EvalConfig, cfg: SuiteConfig, device: torch.device | str = "cpu",
              progress: bool = False) -> SuiteResult:
    """Every task of ``cfg.tasks`` on ``cache`` (splits from ``eval_cfg``; see the module docstring).

    Checks the request first (:func:`check_request`), then encodes and scores with the model in eval mode
    (its mode is restored after); ``progress``: a bar of the stages (encoding, then each task;
    :func:`ctvlp.progress.progress_bar`).
    """
    device = torch.device(device)
    req = check_request(model, cache, eval_cfg, cfg)
    tasks, eval_cfg = req.tasks, req.eval_cfg
    start, seconds = time.perf_counter(), {}
    was_training = model.training
    model.eval()
    result = SuiteResult(metrics={})
    m = result.metrics
    with progress_bar(1 + len(tasks), "eval", "stage", progress) as bar, _restore_mode(model, was_training):
        @contextlib.contextmanager
        def stage(name: str):
            """Time the stage into ``seconds[name]`` and move the bar past it."""
            bar.set_postfix_str(name)
            tick = time.perf_counter()
            yield
            seconds[name] = time.perf_counter() - tick
            bar.update(1)

        with stage("encode"):
            val = encode_split(model, cache, eval_cfg, eval_cfg.val_split, device)
            result.test = test = encode_split(model, cache, eval_cfg, eval_cfg.test_split, device)
        cache_labels = label_names_of(cache.index.columns)
        cols = [cache_labels.index(name) for name in req.labels]
        if "zeroshot" in tasks:
            with stage("zeroshot"):
                score = prompt_scorer(model, req.labels, eval_cfg.prompt_style, req.prompts)
                m["zeroshot"], result.scores = zero_shot_levels(score, val, test, cols, req.labels, cfg)
                avail = test.available[:, cols]
                result.roc = {name: (result.scores[avail[:, j], j], test.labels[avail[:, j], cols[j]])
                              for j, name in enumerate(req.labels)}
        if "retrieval" in tasks:
            with stage("retrieval"):
                m["retrieval"], result.examples = retrieval_levels(test, cfg)
        if "probe" in tasks:
            with stage("probe"):
                train = encode_split(model, cache, eval_cfg, cfg.train_split, device)
                m["probe"] = linear_probe(*(Split(e.image_emb.numpy(), *_columns(e, cols)) for e in (train, val, test)),
                                          req.labels, n_bootstrap=cfg.n_bootstrap, seed=cfg.seed,
                                          clusters=test.patients, level=cfg.level)
                m["probe"]["n_train"] = len(train.ids)
        for task in tasks:
            if task not in CORE_TASKS:
                with stage(task):
                    m[task] = EXTRA_TASKS[task](model, cache, eval_cfg, device, cfg)
                    if isinstance(m[task], dict) and "overlays" in m[task]:
                        result.overlays[task] = m[task].pop("overlays")
    result.metrics = {**_header(cache, eval_cfg, cfg, req, val, test), **m,
                      "seconds": {**seconds, "total": time.perf_counter() - start}}
    if result.scores is not None and cfg.volumes:
        result.volumes = report_volumes(cache, result, cfg.volumes)
    return result


@contextlib.contextmanager
def _restore_mode(model, was_training: bool):
    try:
        yield
    finally:
        model.train(was_training)


def _header(cache: Cache, eval_cfg: EvalConfig, cfg: SuiteConfig, req: _Request, val: Encoded, test: Encoded) -> dict:
    """The keys of metrics.json that say what was evaluated, how (docs/eval-metrics.md)."""
    return {"schema_version": SCHEMA_VERSION, "ctvlp_version": __version__, "recipe": None, "step": None,
            "checkpoint": None, "tasks": list(req.tasks), "cache": str(cache.root),
            "splits": {"val": eval_cfg.val_split, "test": eval_cfg.test_split,
                       "train": cfg.train_split if "probe" in req.tasks else None},
            "n": {"val_volumes": len(val.ids), "test_volumes": len(test.ids),
                  "test_scans": len(set(test.scans)), "test_patients": len(set(test.patients))},
            "protocol": {"name": cfg.protocol, "labels": req.labels, "skipped": req.skipped},
            "prompts": {"file": cfg.prompts, "style": eval_cfg.prompt_style},
            "bootstrap": {"n": cfg.n_bootstrap, "level": cfg.level, "seed": cfg.seed, "unit": "patient"}}


def report_volumes(cache: Cache, result: SuiteResult, n: int) -> list[dict]:
    """The first ``n`` test volumes of ``result`` for the report: id, the windowed image (D, H, W), the report
    and the labels whose volume-level zero-shot score reaches the label's validation threshold."""
    test, labels = result.test, result.metrics["protocol"]["labels"]
    per_label = result.metrics["zeroshot"]["volume"]["per_label"]
    thresholds = np.array([per_label[name]["threshold"] for name in labels], dtype=float)  # (L,) NaN: none
    lo, hi = cache.config.hu_window
    out = []
    for i in range(min(n, len(test.ids))):
        volume = cache.volume(test.ids[i])
        out.append({"id": test.ids[i], "image": window(volume.slab(0, volume.shape[0]), lo, hi),
                    "report": test.texts[i],
                    "predicted": [name for name, s, t in zip(labels, result.scores[i], thresholds)
                                  if np.isfinite(t) and s >= t]})
    return out


def evaluate_cell(model, cache: Cache, eval_cfg: EvalConfig, device: torch.device | str = "cpu",
                  protocol: str = "18", prompts: str | None = None) -> tuple[dict, Encoded]:
    """One slice-count robustness cell (:mod:`ctvlp.eval.robustness`): :func:`run_suite` on zero-shot, retrieval
    and ``eval_cfg.tasks`` without intervals; (its ``n``, ``zeroshot``, ``retrieval``, task and ``seconds`` keys,
    the test split encoded)."""
    cfg = SuiteConfig(tasks=("zeroshot", "retrieval", *eval_cfg.tasks), protocol=protocol, prompts=prompts,
                      n_bootstrap=0, volumes=0)
    result = run_suite(model, cache, eval_cfg, cfg, device)
    keep = ("n", "zeroshot", "retrieval", *eval_cfg.tasks, "seconds")
    return {k: result.metrics[k] for k in keep if k in result.metrics}, result.test


def describe_run(result: SuiteResult, recipe: str, step: int, checkpoint: str | None,
                 training: dict | None = None) -> SuiteResult:
    """``result`` with what was evaluated filled in -- ``recipe``, ``step``, ``checkpoint``, ``training`` (after a
    training run) -- and the recipe's paper table (``paper_rows``, :func:`ctvlp.eval.paper.paper_rows`)."""
    metrics = {**result.metrics, "recipe": recipe, "step": step, "checkpoint": checkpoint}
    if training is not None:
        metrics["training"] = training
    metrics["paper_rows"] = paper_rows(recipe, metrics)
    result.metrics = metrics
    return result


def with_overrides(eval_cfg: EvalConfig, **changes) -> EvalConfig:
    """``eval_cfg`` with the given fields replaced (None values keep the checkpoint's)."""
    return dataclasses.replace(eval_cfg, **{k: v for k, v in changes.items() if v is not None})
