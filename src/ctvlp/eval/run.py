"""Encode a split of a prepared cache once: every volume's image embedding, its report's embedding, its
labels and the scan and patient it belongs to (:class:`Encoded`), what the one evaluator
(:func:`ctvlp.eval.suite.run_suite`) and the slice-count robustness cells score.

Retrieval pairs each test volume with its own report (findings + impressions); reconstructions of
one scan share a report, so a hit on any reconstruction of the query's scan counts
(:func:`chance_recall` is the expected recall of a random ranking under that rule).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch

from ctvlp.data.cache import Cache
from ctvlp.data.loader import make_loader, split_dataset
from ctvlp.data.sampling import report_text
from ctvlp.eval.config import EvalConfig
from ctvlp.models.prompting import encode_texts


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
