"""CT-CLIP baseline (Hamamci et al. 2024): ViT with learned absolute positions over 20 x 20 x 10
patches, fixed in-plane crop/pad 480 x 480 and at most 240 slices at 0.75 x 0.75 x 1.5 mm, InfoNCE,
prompts "X is present." / "X is not present.", AdamW."""

from __future__ import annotations

import math

from ctvlp.data.sampling import SamplerConfig
from ctvlp.models.text import TextTowerConfig
from ctvlp.models.vit3d import vit_config
from ctvlp.models.vlp import ModelConfig
from ctvlp.train.config import DataConfig, EvalConfig, LossConfig, TrainConfig
from ctvlp.train.optim import OptimConfig


def recipe() -> TrainConfig:
    """The recipe's complete config (see the module docstring)."""
    vision = vit_config("base", patch=(10, 20, 20), pos="learned", learned_grid=(24, 24, 24))
    text = TextTowerConfig(name="minilm", pooling="cls")
    sampler = SamplerConfig(mode="whole", size=(480, 480), max_slices=240, text="report")
    return TrainConfig(
        recipe="ctclip",
        model=ModelConfig(vision=vision, text=text, embed_dim=512, init_logit_scale=math.log(1 / 0.07)),
        data=DataConfig(sampler=sampler, batch_size=8),
        loss=LossConfig(name="clip"),
        optim=OptimConfig(name="adamw", lr=1.25e-5, warmup_steps=1000),
        eval=EvalConfig(prompt_style="ctclip", sampler=SamplerConfig(mode="whole", size=(480, 480), max_slices=240,
                                                                     text="report")),
        steps=100_000)
