"""The tiny debug variant of any recipe (``ctvlp train --debug``, tests): same objective, sampler kind and
optimiser, a model and input that train in seconds on a CPU."""

from __future__ import annotations

import dataclasses

from ctvlp.data.preprocess import PreprocessConfig
from ctvlp.models.ctvit import CTViTConfig, ctvit_config
from ctvlp.models.decoder import DecoderConfig
from ctvlp.models.mae import MaeDecoderConfig
from ctvlp.models.resnet3d import ResNet3dConfig
from ctvlp.models.text import TextTowerConfig
from ctvlp.models.vit3d import vit_config
from ctvlp.models.voxel_head import VoxelHeadConfig
from ctvlp.recipes.common import train_depth
from ctvlp.recipes.run import RunConfig


DEBUG_PREPROCESS = PreprocessConfig()
"""Every debug variant's cache: the default grid (1.5 x 1.5 x 3 mm, body crop), which `ctvlp prepare` without
``--recipe`` makes and the tests' synthetic caches use; a 32 x 32 crop of it trains in seconds."""


DEBUG_EVAL = dict(task_volumes=4, probe_steps=10, gen_probe_steps=10, gen_probe_batch_size=4, gen_probe_width=32,
                  gen_probe_depth=1, gen_probe_max_length=32, robustness_counts=(0, 4, 1))
"""Every evaluation task of the recipe (its paper's, ``ctvlp.eval.paper``) kept, each at a size that runs in
seconds: 4 test volumes for the per-volume tasks, 10 probe and decoder steps, 3 slice counts."""


def debug_variant(cfg: RunConfig) -> RunConfig:
    """Same objective, sampler kind and optimiser; a tiny ViT (or ResNet-10 at 1/8 width), a tiny random
    text tower, 32 x 32 input."""
    fixed_depth = None  # CTViT takes one input size: every sample is cropped/padded to exactly 16 slices
    if isinstance(cfg.model.vision, CTViTConfig):
        vision, fixed_depth = ctvit_config("debug", image_size=(16, 32, 32)), 16
    elif isinstance(cfg.model.vision, ResNet3dConfig):
        vision = dataclasses.replace(cfg.model.vision, depth=10, widths=(8, 8, 16, 16))
    else:
        grid = {"learned_grid": (8, 8, 8)} if cfg.model.vision.pos == "learned" else {}
        vision = vit_config("debug", pos=cfg.model.vision.pos, patch=(4, 8, 8), **grid)
    vision = dataclasses.replace(vision, in_chans=cfg.model.vision.in_chans)
    model = dataclasses.replace(
        cfg.model, vision=vision, text=TextTowerConfig(name="tiny", pooling=cfg.model.text.pooling), embed_dim=32,
        seg=cfg.model.seg and VoxelHeadConfig(embed_dim=8, hidden=16),
        decoder=cfg.model.decoder and DecoderConfig(width=32, depth=1, heads=2, max_length=64),
        mae=cfg.model.mae and MaeDecoderConfig(width=32, depth=1, heads=2),
        image_pool_heads=4,  # the pool kind is kept; COLIPRI's 12 heads do not divide embed_dim 32
        text_projection=None)  # the tiny BERT's 64 is not embed_dim: project as the image side
    sampler = dataclasses.replace(cfg.data.sampler, size=(32, 32), chunk_depth=8,
                                  max_slices=16 if cfg.data.sampler.mode == "whole" else None,
                                  min_depth=fixed_depth or cfg.data.sampler.min_depth)
    data = dataclasses.replace(cfg.data, preprocess=DEBUG_PREPROCESS, sampler=sampler, batch_size=4, num_workers=0,
                               max_text_tokens=64)
    eval_sampler = dataclasses.replace(cfg.eval.sampler, size=(32, 32), max_slices=16,
                                       min_depth=fixed_depth or cfg.eval.sampler.min_depth)
    evaluation = dataclasses.replace(cfg.eval, sampler=eval_sampler,
                                     robustness_depth=train_depth(sampler), **DEBUG_EVAL)
    optim = dataclasses.replace(cfg.optim, warmup_steps=2)
    return dataclasses.replace(cfg, model=model, data=data, eval=evaluation, optim=optim, steps=10, grad_accum=1,
                               log_every=2, ckpt_every=5)
