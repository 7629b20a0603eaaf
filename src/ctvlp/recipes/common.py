"""Helpers the recipe files share."""

from __future__ import annotations

from ctvlp.data.sampling import SamplerConfig


def train_depth(sampler: SamplerConfig) -> int | None:
    """``EvalConfig.robustness_depth`` of a recipe: the chunk depth it trains on (``chunk`` mode), else None
    (the vision tower's smallest depth)."""
    return sampler.chunk_depth if sampler.mode == "chunk" else None


CXR_BERT = "microsoft/BiomedVLP-CXR-BERT-specialized"
"""BioViL's text encoder (Boecking et al. 2022), CT-CLIP's and COLIPRI's text tower, SegVL's initialisation."""

CXR_BERT_REVISION = "5157bdba1437a3aed316dacb1a5b68edf96b9902"
"""The hub commit of :data:`CXR_BERT` that COLIPRI's package (``colipri`` 0.1.3) pins: its config ships its
own code (``auto_map``), which the recipes trust at this commit only."""
