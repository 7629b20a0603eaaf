"""Evaluation over embeddings: metrics as pure functions, zero-shot classification, retrieval.

Nothing here runs a model: callers encode each volume and each text once and pass the embeddings.
"""

from __future__ import annotations

from ctvlp.eval.metrics import auroc, best_f1_threshold, binary_metrics, bootstrap_ci
from ctvlp.eval.prompts import PromptIndex, PromptSet, PromptStyle, build_prompts, load_prompts
from ctvlp.eval.retrieval import retrieval_both, retrieval_metrics, retrieval_ranks
from ctvlp.eval.zeroshot import evaluate_zero_shot, zero_shot_scores

__all__ = [
    "PromptIndex", "PromptSet", "PromptStyle", "auroc", "best_f1_threshold", "binary_metrics",
    "bootstrap_ci", "build_prompts", "evaluate_zero_shot", "load_prompts", "retrieval_both",
    "retrieval_metrics", "retrieval_ranks", "zero_shot_scores",
]
