"""SCALE-VLP (arXiv 2511.02996; our reconstruction, METHODS.md): a 3D ViT over 256 x 256 x 32 inputs
with 16^3 patches, the SWCA loss — SigLIP with soft targets q = 0.9 I + 0.1 A, A the unnormalised
blend (alpha 0.5) of spatial (token-feature mean/covariance kernels) and knowledge (the frozen text
tower's report-report similarity) affinities (METHODS.md's row-normalised W softened nothing; see
``ctvlp.losses.swca``) — a frozen text tower (BioClinicalBERT in the paper; the packaged MiniLM offline)."""

from __future__ import annotations

from ctvlp.data.sampling import SamplerConfig
from ctvlp.recipes.sigvlp import PREPROCESS as SIGVLP_PREPROCESS
from ctvlp.models.text import TextTowerConfig
from ctvlp.models.vit3d import vit_config
from ctvlp.models.vlp import ModelConfig
from ctvlp.recipes.common import train_depth
from ctvlp.train.config import DataConfig, EvalConfig, LossConfig, TrainConfig
from ctvlp.train.optim import OptimConfig


def recipe() -> TrainConfig:
    """The recipe's complete config (see the module docstring)."""
    vision = vit_config("base", patch=(16, 16, 16), pos="learned", learned_grid=(8, 16, 16))
    # BioClinicalBERT, frozen (the paper); pooling and token length: the paper is silent (ours: mean, 512)
    text = TextTowerConfig(name="emilyalsentzer/Bio_ClinicalBERT", pooling="mean", freeze="all", max_length=512)
    sampler = SamplerConfig(mode="chunk", chunk_depth=32, padding="repeat", size=(256, 256), text="report")
    return TrainConfig(
        recipe="scalevlp",
        model=ModelConfig(vision=vision, text=text, embed_dim=512, image_pool="attention", projection="mlp"),
        data=DataConfig(preprocess=SIGVLP_PREPROCESS, sampler=sampler, batch_size=32, max_text_tokens=512),
        loss=LossConfig(name="swca", options={"swca": {"alpha": 0.5, "variant": "soft_targets", "eps": 0.1,
                                                       "knowledge": "report_emb"}}),
        optim=OptimConfig(name="adamw", lr=1e-4, warmup_steps=1000),
        eval=EvalConfig(sampler=SamplerConfig(mode="whole", size=(256, 256), max_slices=64, text="report"),
                        robustness_depth=train_depth(sampler)),
        steps=100_000)
