"""Helpers the recipe files share."""

from __future__ import annotations

from ctvlp.data.sampling import SamplerConfig
from ctvlp.models.text import TRUSTED_TEXT_TOWERS, TextTowerConfig


def train_depth(sampler: SamplerConfig) -> int | None:
    """``EvalConfig.robustness_depth`` of a recipe: the chunk depth it trains on (``chunk`` mode), else None
    (the vision tower's smallest depth)."""
    return sampler.chunk_depth if sampler.mode == "chunk" else None


def trusted_text(recipe: str, **fields) -> TextTowerConfig:
    """The text config of a recipe that runs its tower's own code: the hub id and pinned revision
    :data:`~ctvlp.models.text.TRUSTED_TEXT_TOWERS` lists for ``recipe``, ``trust_remote_code`` on, and ``fields``."""
    name, revision = TRUSTED_TEXT_TOWERS[recipe]
    return TextTowerConfig(name=name, revision=revision, trust_remote_code=True, **fields)
