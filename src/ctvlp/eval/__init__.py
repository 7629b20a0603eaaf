"""Evaluation over embeddings: metrics as pure functions, zero-shot classification, retrieval.

Callers encode each volume and each text once and pass the embeddings (prompt texts are
:mod:`ctvlp.data.prompts`', their encoding and scores :mod:`ctvlp.models.prompting`'s).
The names below load their module on first use, so that a light submodule (:mod:`ctvlp.eval.names`,
read by the CLI's help) does not pull in torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "auroc": "metrics", "best_f1_threshold": "metrics", "binary_metrics": "metrics", "bootstrap_ci": "metrics",
    "retrieval_both": "retrieval", "retrieval_metrics": "retrieval", "retrieval_ranks": "retrieval",
    "evaluate_zero_shot": "zeroshot",
}
"""Exported name -> the submodule that defines it."""

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ctvlp.eval' has no attribute {name!r}")
    return getattr(importlib.import_module(f"ctvlp.eval.{_EXPORTS[name]}"), name)
