"""Evaluate a vision-language model on a prepared cache: encode every volume once, every prompt once.

Zero-shot classification scores each label by the softmax over its (positive, negative) prompt
pair; thresholds come from ``EvalConfig.val_split`` and the numbers from ``EvalConfig.test_split``.
Retrieval pairs each test volume with its own report (findings + impressions); reconstructions of
one scan share a report, so a hit on any reconstruction of the query's scan counts.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch

from ctvlp.data.cache import Cache
from ctvlp.data.loader import make_loader, split_dataset
from ctvlp.data.manifest import label_names_of
from ctvlp.data.prompts import prompt_set, split_reports
from ctvlp.data.sampling import report_text
from ctvlp.eval.config import EvalConfig
from ctvlp.eval.generation import evaluate_generation
from ctvlp.eval.organs import evaluate_organs
from ctvlp.eval.retrieval import retrieval_both
from ctvlp.eval.real_masks import evaluate_real_masks
from ctvlp.eval.seg_probe import evaluate_seg_probe, trained_probe
from ctvlp.eval.segmentation import evaluate_segmentation
from ctvlp.models.prompting import encode_texts, prompt_scorer
from ctvlp.eval.zeroshot import evaluate_zero_shot


@dataclass
class Encoded:
    """One split, encoded: (N, D) image and report embeddings, (N, K) labels and availability."""

    ids: list[str]
    image_emb: torch.Tensor
    report_emb: torch.Tensor
    labels: np.ndarray
    available: np.ndarray
    scans: list[str]
    texts: list[str]
    patients: list[str] = dataclasses.field(default_factory=list)


@torch.no_grad()
def encode_split(model, cache: Cache, cfg: EvalConfig, split: str, device: torch.device,
                 num_workers: int = 0) -> Encoded:
    """Encode every volume of ``split`` once (whole volume by default) and its report once."""
    dataset = split_dataset(cache, cfg.sampler, split, seed=0)
    loader = make_loader(dataset, cfg.batch_size, num_workers=num_workers, exact_depth=True)  # batch-independent
    rows, images = [], []
    for batch in loader:
        images.append(model.encode_image(batch["image"].to(device), batch["slice_mask"].to(device)).float().cpu())
        rows.extend(batch["id"])
    position = {vid: i for i, vid in enumerate(dataset.index["id"])}
    order = [position[vid] for vid in rows]  # loader order -> index rows
    index = dataset.index.iloc[order]
    texts = [report_text(f, i, cfg.sampler.text) for f, i in zip(index["findings"], index["impressions"])]
    return Encoded(ids=rows, image_emb=torch.cat(images), report_emb=encode_texts(model, texts),
                   labels=dataset.labels[order], available=dataset.label_mask[order],
                   scans=[f"{p}/{s}" for p, s in zip(index["patient_id"], index["scan_id"])], texts=texts,
                   patients=[str(p) for p in index["patient_id"]])


def model_prompts(model, cache: Cache, cfg: EvalConfig, labels: list[str]):
    """The PromptSet ``cfg.prompt_style`` is read from (:func:`ctvlp.data.prompts.prompt_set`: the packaged
    styles, plus for ``corpus`` the model's own mined style, else one mined from ``cfg.corpus_split``'s reports)."""
    return prompt_set(cfg.prompt_style, labels, stored=model.prompts,
                      reports=lambda: split_reports(cache, cfg.corpus_split))


def chance_recall(groups: list[str], k: int) -> float:
    """Expected recall@k of a random ranking when any of the query's group members is a hit:
    mean over queries of 1 - C(N - m, k) / C(N, k), m the size of the query's group."""
    n = len(groups)
    counts = Counter(groups)
    sizes = np.array([counts[g] for g in groups])  # (N,) m per query
    miss = np.ones(n)
    for i in range(min(k, n)):
        miss *= np.clip(n - sizes - i, 0, None) / (n - i)
    return float(np.mean(1 - miss))


def _organs(model, cache: Cache, cfg: EvalConfig, device: torch.device) -> dict:
    sampler = dataclasses.replace(cfg.sampler, mode="chunk", chunk_depth=cfg.organ_chunk_depth, max_slices=None)
    return evaluate_organs(model, cache, sampler, cfg.val_split, cfg.test_split, device, batch_size=cfg.batch_size)


def _segmentation(model, cache: Cache, cfg: EvalConfig, device: torch.device) -> dict:
    return evaluate_segmentation(model, cache, cfg.sampler, cfg.test_split, device, max_volumes=cfg.task_volumes,
                                 hd95=cfg.segmentation_hd95, overlays=cfg.overlays)


def _generation(model, cache: Cache, cfg: EvalConfig, device: torch.device) -> dict:
    return evaluate_generation(model, cache, cfg.sampler, cfg.test_split, device, max_volumes=cfg.task_volumes,
                               batch_size=cfg.batch_size)


def _generation_probe(model, cache: Cache, cfg: EvalConfig, device: torch.device) -> dict:
    from ctvlp.eval.generation_probe import evaluate_generation_probe

    return evaluate_generation_probe(model, cache, cfg, device)


def _robustness(model, cache: Cache, cfg: EvalConfig, device: torch.device) -> dict:
    from ctvlp.eval.robustness import evaluate_robustness  # it runs evaluate_model: import on use

    return evaluate_robustness(model, cache, cfg, device)


def _seg_probe(model, cache: Cache, cfg: EvalConfig, device: torch.device) -> dict:
    return evaluate_seg_probe(model, cache, cfg, device)


def _real_masks(model, cache: Cache, cfg: EvalConfig, device: torch.device) -> dict:
    probe = trained_probe(model, cache, cfg, device) if "seg_probe" in cfg.tasks else None
    return evaluate_real_masks(model, cache.config, cfg.sampler, device, cfg.real_dir, probe,
                               hd95=cfg.segmentation_hd95, batch_size=cfg.batch_size, overlays=cfg.overlays > 0)


EXTRA_TASKS = {"organs": _organs, "segmentation": _segmentation, "generation": _generation,
               "robustness": _robustness, "seg_probe": _seg_probe,
               "real_masks": _real_masks, "generation_probe": _generation_probe}
"""``EvalConfig.tasks`` -> function(model, cache, eval config, device) -> the task's metrics."""


@torch.no_grad()
def evaluate_model(model, cache: Cache, cfg: EvalConfig, device: torch.device | str = "cpu", details: bool = False):
    """Zero-shot classification (thresholds on ``cfg.val_split``) and retrieval on ``cfg.test_split``.

    Returns the metrics dict; with ``details=True`` also ``(test Encoded, test scores (N, L), labels)``.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    try:
        val = encode_split(model, cache, cfg, cfg.val_split, device)
        test = encode_split(model, cache, cfg, cfg.test_split, device)
        encoded = time.perf_counter()
        labels = label_names_of(cache.index.columns)
        score = prompt_scorer(model, labels, cfg.prompt_style, model_prompts(model, cache, cfg, labels))
        scores = {name: score(s.image_emb) for name, s in (("val", val), ("test", test))}
        zero_shot = evaluate_zero_shot(scores["val"], val.labels, val.available, scores["test"], test.labels,
                                       test.available, labels)
        retrieval = retrieval_both(test.image_emb, test.report_emb, ks=(1, 5, 10, 50), groups=test.scans)
        extra = {task: EXTRA_TASKS[task](model, cache, cfg, device) for task in cfg.tasks}
    finally:
        model.train(was_training)
    metrics = {"n_val": len(val.ids), "n_test": len(test.ids), "prompt_style": cfg.prompt_style,
               "zero_shot": zero_shot, "retrieval": retrieval,
               "chance_recall@5": chance_recall(test.scans, 5), **extra,
               "seconds": {"encode": encoded - start, "total": time.perf_counter() - start}}
    return (metrics, test, scores["test"], labels) if details else metrics

