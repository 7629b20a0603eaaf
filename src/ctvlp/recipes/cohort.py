"""Cohort-size variants of the recipes: what `ctvlp compare` trains on the synthetic cohort.

The registered recipes are paper-sized (ViT-base over 256^2 or 480^2 inputs) and do not take one step
in a CPU minute. ``cohort_variant(cfg)`` keeps what makes a recipe itself -- the objective (loss terms,
weights, options, logit initialisation, text input and sentence matching), the sampler kind (chunk or
whole volume, padding, text source, crop, HU windows), the position mode of the ViT (and its RoPE base,
MLP, LayerScale, stem), the image pooling, the projection and the optimiser family -- and takes from
the ``demo`` recipe everything that is a matter of size: the vision tower's width, depth, heads and
patch, the embedding dimension, the MAE decoder's width (half the tower's, as MAE keeps its decoder
lighter than the encoder; COLIPRI's 256-wide decoder on a 192-wide tower made an MAE step cost as much
as a full one), the in-plane size and chunk depth, the batch size and gradient accumulation, the frozen
packaged MiniLM text tower (the recipe's pooling kept; projected like the image side) with the demo's token
budget, and the learning-rate schedule. Every variant is evaluated the same way: whole volumes of at
most ``COHORT_MAX_SLICES`` slices at the demo's in-plane size, on the recipe's (or the default) prompt style.

The learning rate and schedule are the demo's for every recipe (the papers' rates, e.g. CT-CLIP's constant
1.25e-6 over 100k steps or SegVL's 5e-6 over 2M, leave a 4-block model at chance in a few hundred steps; 1.25e-5 was
measured to); Muon's own rate and every other optimiser hyper-parameter stay the recipe's.
"""

from __future__ import annotations

import dataclasses
import math

from ctvlp.models.ctvit import CTViTConfig, ctvit_config
from ctvlp.models.resnet3d import ResNet3dConfig
from ctvlp.models.vit3d import ViT3dConfig
from ctvlp.recipes import get_recipe
from ctvlp.recipes.common import train_depth
from ctvlp.recipes.run import RunConfig

COHORT_MAX_SLICES = 32
"""Whole-volume depth cap (train and eval) of the cohort variants: a synthetic chest prepared at the
demo's 3 x 3 x 6 mm has 10-20 slices, so no volume is cut; twice the demo's chunk depth."""

COHORT_ORGAN_CHUNK = 4
"""Chunk depth of the organ-classification task on the cohort: 4 slices of 6 mm (SigVLP's 32 x 1.5 mm is
48 mm; a whole synthetic chest is only 10-20 cohort slices, so deeper chunks would contain every organ)."""

COHORT_DROPPED_TASKS = ("robustness", "seg_probe", "generation_probe")
"""Paper tasks (``ctvlp.eval.paper``) left out of a cohort run's own evaluation: `ctvlp compare` keeps 15 % of
each recipe's wall-clock budget for it and its table reads zero-shot and retrieval, while the slice-count
grid (a dozen whole evaluations) and the trained probes would take that budget several times over.
`ctvlp eval` on a compare run's checkpoint runs them (its default adds the recipe's paper tasks), at
:data:`COHORT_EVAL`'s sizes."""

COHORT_EVAL = dict(task_volumes=50, probe_steps=100, gen_probe_steps=300, gen_probe_width=256, gen_probe_depth=2,
                   gen_probe_max_length=128, robustness_counts=(0, 16, 4, 1))
"""Evaluation task sizes of the cohort variants: a few CPU minutes per task on the synthetic cohort."""

RESNET_WIDTHS = (16, 32, 64, 128)
"""Stage widths of a ResNet tower's cohort variant (ResNet-10 at 1/4 of MONAI's width), about the
demo ViT's cost per sample."""


def _demo() -> RunConfig:
    return get_recipe("demo")


def learned_grid_for(patch: tuple[int, int, int], depth: int, size: tuple[int, int]) -> tuple[int, int, int]:
    """Token grid (gz, gy, gx) of the largest input (``depth`` slices, in-plane ``size``) at ``patch``."""
    return (math.ceil(depth / patch[0]), math.ceil(size[0] / patch[1]), math.ceil(size[1] / patch[2]))


def _vision(vision, demo: ViT3dConfig, max_depth: int, size: tuple[int, int]):
    """The recipe's tower at the demo's size: same position mode, RoPE base, MLP, stem, pooling inputs."""
    if isinstance(vision, ResNet3dConfig):
        return dataclasses.replace(vision, depth=10, widths=RESNET_WIDTHS)
    if isinstance(vision, CTViTConfig):  # one fixed input: COHORT_MAX_SLICES slices (the sampler pads to it)
        return ctvit_config("ctclip", size="cohort", image_size=(COHORT_MAX_SLICES, *size), patch=demo.patch,
                            width=demo.width, heads=demo.heads, head_dim=demo.width // demo.heads,
                            spatial_depth=demo.depth // 2, temporal_depth=demo.depth // 2, codebook_size=1024)
    head_dim_same = vision.width // vision.heads == demo.width // demo.heads
    grid = learned_grid_for(demo.patch, max_depth, size) if vision.pos == "learned" else None
    return dataclasses.replace(vision, size="cohort", width=demo.width, depth=demo.depth, heads=demo.heads,
                               patch=demo.patch, learned_grid=grid,
                               rope_split=vision.rope_split if head_dim_same else None)


def cohort_variant(cfg: RunConfig) -> RunConfig:
    """``cfg`` (a paper-sized recipe) at the ``demo`` recipe's size, keeping its method (module docstring).

    Returns a new config; ``cfg`` is not changed. ``steps`` is the demo's: `ctvlp compare` sets it from
    the wall-clock budget."""
    demo = _demo()
    size, chunk_depth = demo.data.sampler.size, demo.data.sampler.chunk_depth
    whole = cfg.data.sampler.mode == "whole"
    max_depth = max(chunk_depth, COHORT_MAX_SLICES)
    text = dataclasses.replace(demo.model.text, pooling=cfg.model.text.pooling)
    vision = _vision(cfg.model.vision, demo.model.vision, max_depth, size)
    fixed = isinstance(vision, CTViTConfig)  # CTViT takes one input depth
    mae = cfg.model.mae and dataclasses.replace(cfg.model.mae, width=vision.width // 2, heads=vision.heads)
    model = dataclasses.replace(cfg.model, vision=vision, text=text, embed_dim=demo.model.embed_dim, mae=mae,
                                image_pool_heads=4,  # pool kind kept; COLIPRI's 12 heads do not divide 256
                                text_projection=None)  # MiniLM's 384 is not embed_dim: project as the image side
    sampler = dataclasses.replace(cfg.data.sampler, size=size, chunk_depth=chunk_depth,
                                  max_slices=COHORT_MAX_SLICES if whole else None,
                                  min_depth=COHORT_MAX_SLICES if fixed else cfg.data.sampler.min_depth)
    data = dataclasses.replace(cfg.data, preprocess=demo.data.preprocess, sampler=sampler,
                               batch_size=demo.data.batch_size,
                               max_text_tokens=demo.data.max_text_tokens)
    eval_sampler = dataclasses.replace(cfg.eval.sampler, size=size, max_slices=COHORT_MAX_SLICES,
                                       min_depth=COHORT_MAX_SLICES if fixed else cfg.eval.sampler.min_depth)
    evaluation = dataclasses.replace(cfg.eval, sampler=eval_sampler, batch_size=demo.eval.batch_size,
                                     organ_chunk_depth=COHORT_ORGAN_CHUNK, robustness_depth=train_depth(sampler),
                                     tasks=tuple(t for t in cfg.eval.tasks if t not in COHORT_DROPPED_TASKS),
                                     **COHORT_EVAL)
    optim = dataclasses.replace(cfg.optim, lr=demo.optim.lr, warmup_steps=demo.optim.warmup_steps,
                                min_lr_ratio=demo.optim.min_lr_ratio)
    return dataclasses.replace(cfg, model=model, data=data, eval=evaluation, optim=optim, steps=demo.steps,
                               grad_accum=demo.grad_accum, log_every=demo.log_every, ckpt_every=demo.ckpt_every)
