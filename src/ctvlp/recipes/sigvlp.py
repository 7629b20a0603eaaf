"""SigVLP (arXiv 2602.21735): RoPE ViT-base (base 1000, 16^3 patches, no absolute positions) on
32-slice chunks at 1.5 mm with 256 x 256 in-plane, paired with organ-wise sentences, repeat padding,
pairwise sigmoid loss (t = exp(log 10), b = -10), Muon for 2-D block weights and AdamW for the rest."""

from __future__ import annotations

from ctvlp.data.preprocess import PreprocessConfig
from ctvlp.data.sampling import SamplerConfig
from ctvlp.models.text import TextTowerConfig
from ctvlp.models.vit3d import vit_config
from ctvlp.models.vlp import ModelConfig
from ctvlp.recipes.common import train_depth
from ctvlp.train.config import DataConfig, EvalConfig, LossConfig, TrainConfig
from ctvlp.train.optim import OptimConfig


PREPROCESS = PreprocessConfig(spacing=(1.5, 1.5, 1.5), hu_window=(-1000.0, 1000.0))
"""1.5 mm slices (the paper; a 32-slice chunk is 48 mm), 1.5 mm in-plane [ours: the paper states 256 x 256
in-plane, not its spacing; 256 x 1.5 mm = 384 mm holds a body-cropped chest], [-1000, 1000] -> [-1, 1]."""


def recipe() -> TrainConfig:
    """The recipe's complete config (see the module docstring)."""
    vision = vit_config("base", patch=(16, 16, 16), pos="rope", rope_base=1000.0)
    text = TextTowerConfig(name="minilm", pooling="mean")  # SigVLP names no text encoder (seed, METHODS.md): MiniLM
    sampler = SamplerConfig(mode="chunk", chunk_depth=32, padding="repeat", size=(256, 256), text="organs")
    return TrainConfig(
        recipe="sigvlp",
        model=ModelConfig(vision=vision, text=text, embed_dim=512),
        data=DataConfig(preprocess=PREPROCESS, sampler=sampler, batch_size=32),
        loss=LossConfig(name="siglip"),
        optim=OptimConfig(name="muon", lr=1e-4, warmup_steps=1000),
        eval=EvalConfig(sampler=SamplerConfig(mode="whole", size=(256, 256), text="report"), tasks=("organs",),
                        organ_chunk_depth=32, robustness_depth=train_depth(sampler)),
        steps=100_000)
