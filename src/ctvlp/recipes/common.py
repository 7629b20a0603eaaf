"""Helpers the recipe files share."""

from __future__ import annotations

from ctvlp.data.sampling import SamplerConfig


def train_depth(sampler: SamplerConfig) -> int | None:
    """``EvalConfig.robustness_depth`` of a recipe: the chunk depth it trains on (``chunk`` mode), else None
    (the vision tower's smallest depth)."""
    return sampler.chunk_depth if sampler.mode == "chunk" else None
