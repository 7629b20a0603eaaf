"""Recipes: named functions that return a complete :class:`~ctvlp.train.config.TrainConfig`.

``get_recipe(name, debug=False)``; ``debug=True`` shrinks the recipe to a tiny model and input that
train in seconds on a CPU (for tests), keeping its objective, sampler and optimiser choices.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

from ctvlp.config import ConfigError
from ctvlp.data.sampling import SamplerConfig
from ctvlp.models.resnet3d import ResNet3dConfig
from ctvlp.models.text import TextTowerConfig
from ctvlp.models.vit3d import vit_config
from ctvlp.models.vlp import ModelConfig
from ctvlp.train.config import DataConfig, EvalConfig, LossConfig, TrainConfig
from ctvlp.train.optim import OptimConfig

RECIPES: dict[str, Callable[[], TrainConfig]] = {}


def register(fn: Callable[[], TrainConfig]) -> Callable[[], TrainConfig]:
    RECIPES[fn.__name__] = fn
    return fn


def list_recipes() -> list[str]:
    return sorted(RECIPES)


def get_recipe(name: str, debug: bool = False) -> TrainConfig:
    """The recipe's config (its debug variant with ``debug=True``)."""
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; recipes: {', '.join(list_recipes())}")
    cfg = RECIPES[name]()
    return debug_variant(cfg) if debug else cfg


def debug_variant(cfg: TrainConfig) -> TrainConfig:
    """Same objective, sampler kind and optimiser; a tiny ViT (or ResNet-10 at 1/8 width), a tiny random
    text tower, 32 x 32 input."""
    if isinstance(cfg.model.vision, ResNet3dConfig):
        vision = dataclasses.replace(cfg.model.vision, depth=10, widths=(8, 8, 16, 16))
    else:
        grid = {"learned_grid": (8, 8, 8)} if cfg.model.vision.pos == "learned" else {}
        vision = vit_config("debug", pos=cfg.model.vision.pos, patch=(4, 8, 8), **grid)
    model = dataclasses.replace(cfg.model, vision=vision, text=TextTowerConfig(name="tiny", pooling="mean"),
                                embed_dim=32)
    sampler = dataclasses.replace(cfg.data.sampler, size=(32, 32), chunk_depth=8,
                                  max_slices=16 if cfg.data.sampler.mode == "whole" else None)
    data = dataclasses.replace(cfg.data, sampler=sampler, batch_size=4, num_workers=0, max_text_tokens=64)
    evaluation = dataclasses.replace(cfg.eval, sampler=dataclasses.replace(cfg.eval.sampler, size=(32, 32),
                                                                           max_slices=16))
    optim = dataclasses.replace(cfg.optim, warmup_steps=2)
    return dataclasses.replace(cfg, model=model, data=data, eval=evaluation, optim=optim, steps=10, log_every=2,
                               ckpt_every=5)


@register
def demo() -> TrainConfig:
    """SigVLP-style model sized for a 2-core CPU and the synthetic cohort (`ctvlp demo`, which prepares
    the cache at 3 x 3 x 6 mm): RoPE ViT with a convolutional stem over 4 x 8 x 8 patches on 16-slice
    z-chunks (most synthetic chests fit in one; shorter ones are repeat-padded) paired with the organ
    sentences of the chunk, max-pooled image tokens, Muon. The objective is the sigmoid loss at
    sentence level: every chunk against the batch's distinct sentences, a sentence stating the same
    findings as one of the chunk's own counting as a positive (``sentence_match="findings"``), which
    trains the comparison zero-shot classification makes ("Pleural effusion." vs "No pleural
    effusion."), with its own logit scale and bias; a SigLIP term on whole texts (weight 0.1) keeps
    volume-report retrieval. The packaged MiniLM text tower is frozen and encodes each distinct sentence
    once, so the CPU's time goes to the vision tower."""
    vision = vit_config("small", width=192, depth=4, heads=3, patch=(4, 8, 8), pos="rope", rope_base=1000.0,
                        stem="conv")
    text = TextTowerConfig(name="minilm", pooling="mean", freeze="all", max_length=64)
    sampler = SamplerConfig(mode="chunk", chunk_depth=16, padding="repeat", size=(32, 40), random_crop=True,
                            text="organs")
    return TrainConfig(
        recipe="demo",
        model=ModelConfig(vision=vision, text=text, embed_dim=256, image_pool="max", projection="mlp_bn",
                          text_input="sentences", sentence_match="findings", sentence_logits=True),
        data=DataConfig(sampler=sampler, batch_size=32, num_workers=2),
        loss=LossConfig(name="sentence_sigmoid", weights={"siglip": 0.1}),
        optim=OptimConfig(name="muon", lr=1e-3, warmup_steps=20),
        eval=EvalConfig(prompt_style="report", sampler=SamplerConfig(mode="whole", text="report", size=(32, 40)),
                        batch_size=32),
        steps=600, log_every=10, ckpt_every=200)


@register
def ctclip() -> TrainConfig:
    """CT-CLIP baseline (Hamamci et al. 2024): ViT with learned absolute positions over 20 x 20 x 10
    patches, fixed in-plane crop/pad 480 x 480 and at most 240 slices at 0.75 x 0.75 x 1.5 mm, InfoNCE,
    prompts "X is present." / "X is not present.", AdamW."""
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


@register
def sigvlp() -> TrainConfig:
    """SigVLP (arXiv 2602.21735): RoPE ViT-base (base 1000, 16^3 patches, no absolute positions) on
    32-slice chunks at 1.5 mm with 256 x 256 in-plane, paired with organ-wise sentences, repeat padding,
    pairwise sigmoid loss (t = exp(log 10), b = -10), Muon for 2-D block weights and AdamW for the rest."""
    vision = vit_config("base", patch=(16, 16, 16), pos="rope", rope_base=1000.0)
    text = TextTowerConfig(name="minilm", pooling="mean")
    sampler = SamplerConfig(mode="chunk", chunk_depth=32, padding="repeat", size=(256, 256), text="organs")
    return TrainConfig(
        recipe="sigvlp",
        model=ModelConfig(vision=vision, text=text, embed_dim=512),
        data=DataConfig(sampler=sampler, batch_size=32),
        loss=LossConfig(name="siglip"),
        optim=OptimConfig(name="muon", lr=1e-4, warmup_steps=1000),
        eval=EvalConfig(sampler=SamplerConfig(mode="whole", size=(256, 256), text="report")),
        steps=100_000)


@register
def scalevlp() -> TrainConfig:
    """SCALE-VLP (arXiv 2511.02996; our reconstruction, METHODS.md): a 3D ViT over 256 x 256 x 32 inputs
    with 16^3 patches, the SWCA loss — SigLIP whose pairs are re-weighted by spatial (token-feature
    mean/covariance kernels) and knowledge (the frozen text tower's report-report similarity) affinities,
    alpha 0.5 — a frozen text tower (BioClinicalBERT in the paper; the packaged MiniLM offline)."""
    vision = vit_config("base", patch=(16, 16, 16), pos="learned", learned_grid=(8, 16, 16))
    text = TextTowerConfig(name="minilm", pooling="mean", freeze="all")
    sampler = SamplerConfig(mode="chunk", chunk_depth=32, padding="repeat", size=(256, 256), text="report")
    return TrainConfig(
        recipe="scalevlp",
        model=ModelConfig(vision=vision, text=text, embed_dim=512, image_pool="attention", projection="mlp"),
        data=DataConfig(sampler=sampler, batch_size=32),
        loss=LossConfig(name="swca", options={"swca": {"alpha": 0.5, "variant": "weights", "weight": 1.0,
                                                       "knowledge": "report_emb"}}),
        optim=OptimConfig(name="adamw", lr=1e-4, warmup_steps=1000),
        eval=EvalConfig(sampler=SamplerConfig(mode="whole", size=(256, 256), max_slices=64, text="report")),
        steps=100_000)
