"""The recipe functions: each returns a complete :class:`~ctvlp.train.config.TrainConfig` and is
registered under its name, which :data:`ctvlp.recipes.NAMES` lists (``ctvlp.recipes.get_recipe`` is
the way in). ``debug_variant`` shrinks a recipe to a tiny model and input that train in seconds on a
CPU (for tests), keeping its objective, sampler and optimiser choices.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

from ctvlp.data.sampling import SamplerConfig
from ctvlp.eval.names import CORPUS, LABEL_HEAD
from ctvlp.models.decoder import DecoderConfig
from ctvlp.models.mae import MaeDecoderConfig
from ctvlp.models.resnet3d import ResNet3dConfig
from ctvlp.models.text import TextTowerConfig
from ctvlp.models.vit3d import vit_config
from ctvlp.models.vlp import ModelConfig
from ctvlp.models.voxel_head import VoxelHeadConfig
from ctvlp.recipes import NAMES
from ctvlp.train.config import DataConfig, EvalConfig, LossConfig, StageConfig, TrainConfig
from ctvlp.train.optim import OptimConfig

RECIPES: dict[str, Callable[[], TrainConfig]] = {}
"""Name -> recipe function, filled by :func:`register`."""


def register(fn: Callable[[], TrainConfig]) -> Callable[[], TrainConfig]:
    """Register ``fn`` as the recipe of its name, which must be listed in :data:`ctvlp.recipes.NAMES`."""
    if fn.__name__ not in NAMES:
        raise ValueError(f"recipe {fn.__name__!r} is not listed in ctvlp.recipes.NAMES")
    RECIPES[fn.__name__] = fn
    return fn


def train_depth(sampler: SamplerConfig) -> int | None:
    """``EvalConfig.robustness_depth`` of a recipe: the chunk depth it trains on (``chunk`` mode), else None
    (the vision tower's smallest depth)."""
    return sampler.chunk_depth if sampler.mode == "chunk" else None


def debug_variant(cfg: TrainConfig) -> TrainConfig:
    """Same objective, sampler kind and optimiser; a tiny ViT (or ResNet-10 at 1/8 width), a tiny random
    text tower, 32 x 32 input."""
    if isinstance(cfg.model.vision, ResNet3dConfig):
        vision = dataclasses.replace(cfg.model.vision, depth=10, widths=(8, 8, 16, 16))
    else:
        grid = {"learned_grid": (8, 8, 8)} if cfg.model.vision.pos == "learned" else {}
        vision = vit_config("debug", pos=cfg.model.vision.pos, patch=(4, 8, 8), **grid)
    vision = dataclasses.replace(vision, in_chans=cfg.model.vision.in_chans)
    model = dataclasses.replace(
        cfg.model, vision=vision, text=TextTowerConfig(name="tiny", pooling=cfg.model.text.pooling), embed_dim=32,
        seg=cfg.model.seg and VoxelHeadConfig(embed_dim=8, hidden=16),
        decoder=cfg.model.decoder and DecoderConfig(width=32, depth=1, heads=2, max_length=64),
        mae=cfg.model.mae and MaeDecoderConfig(width=32, depth=1, heads=2))
    sampler = dataclasses.replace(cfg.data.sampler, size=(32, 32), chunk_depth=8,
                                  max_slices=16 if cfg.data.sampler.mode == "whole" else None)
    data = dataclasses.replace(cfg.data, sampler=sampler, batch_size=4, num_workers=0, max_text_tokens=64)
    evaluation = dataclasses.replace(cfg.eval, sampler=dataclasses.replace(cfg.eval.sampler, size=(32, 32),
                                                                           max_slices=16),
                                     robustness_depth=train_depth(sampler))
    optim = dataclasses.replace(cfg.optim, warmup_steps=2)
    return dataclasses.replace(cfg, model=model, data=data, eval=evaluation, optim=optim, steps=10, log_every=2,
                               ckpt_every=5)


DEMO_WINDOWS: tuple[tuple[float, float], ...] = ((-1000.0, 1000.0), (-1000.0, -500.0), (-1000.0, -850.0),
                                                 (150.0, 950.0))
"""HU windows of the demo's input channels: whole range, lung parenchyma, low attenuation (emphysema),
calcium (plaques above contrast-filled blood)."""


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
    once, so the CPU's time goes to the vision tower.

    Four HU windows are four input channels (:data:`DEMO_WINDOWS`): the whole range, the lung
    parenchyma, the low-attenuation range in which emphysema is measured clinically (LAA-950/-910) and a
    calcium window. In the 2,000 HU window alone, lung-density findings differ from normal lung by a few
    hundredths of the input range: a supervised probe of this tower (``scripts/window_probe.py``, 300
    steps) reached AUROC 0.53 / 0.54 / 0.58 on emphysema / mosaic attenuation / ground glass with it,
    0.91 / 0.97 / 0.68 with the lung and low-attenuation windows, which cost the calcifications
    (0.92 / 0.95 -> 0.70 / 0.79); the calcium window gives back part of that (0.76 / 0.84;
    docs/results/demo-windows-2026-11-23.md).

    Zero-shot prompts are the training reports' own sentences (``prompt_style="corpus"``,
    ``ctvlp.eval.prompts.corpus_style``): the reports never write "medical material", they write "A
    venous port is seen in the right chest wall."."""
    vision = vit_config("small", width=192, depth=4, heads=3, patch=(4, 8, 8), pos="rope", rope_base=1000.0,
                        stem="conv", in_chans=len(DEMO_WINDOWS))
    text = TextTowerConfig(name="minilm", pooling="mean", freeze="all", max_length=64)
    sampler = SamplerConfig(mode="chunk", chunk_depth=16, padding="repeat", size=(32, 40), random_crop=True,
                            text="organs", windows=DEMO_WINDOWS)
    return TrainConfig(
        recipe="demo",
        model=ModelConfig(vision=vision, text=text, embed_dim=256, image_pool="max", projection="mlp_bn",
                          text_input="sentences", sentence_match="findings", sentence_logits=True),
        data=DataConfig(sampler=sampler, batch_size=32, num_workers=2),
        loss=LossConfig(name="sentence_sigmoid", weights={"siglip": 0.1}),
        optim=OptimConfig(name="muon", lr=1e-3, warmup_steps=20),
        eval=EvalConfig(prompt_style=CORPUS, sampler=SamplerConfig(mode="whole", text="report", size=(32, 40),
                                                                   windows=DEMO_WINDOWS),
                        batch_size=32, robustness_depth=train_depth(sampler)),
        steps=800, log_every=10, ckpt_every=200)


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
        eval=EvalConfig(sampler=SamplerConfig(mode="whole", size=(256, 256), text="report"), tasks=("organs",),
                        organ_chunk_depth=32, robustness_depth=train_depth(sampler)),
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
        eval=EvalConfig(sampler=SamplerConfig(mode="whole", size=(256, 256), max_slices=64, text="report"),
                        robustness_depth=train_depth(sampler)),
        steps=100_000)


SEGVL_MASKS = ("lung", "heart", "aorta", "trachea_bronchi", "esophagus", "bone", "pleura", "mediastinum",
               "lung_nodule", "pleural_effusion")
"""Masks SegVL's image-mask steps train on (the synthetic cohort's names; a volume without one of them
has it marked unavailable, so it adds no loss term)."""


@register
def segvl() -> TrainConfig:
    """SegVL (METHODS.md): ViT-B over 20 x 20 x 10 patches with learned positions (CT-CLIP's input:
    480 x 480, at most 240 slices), InfoNCE, a light per-token MLP voxel head (E = 32) scored against
    "This is <mask name>" anchors, visual enhancement (lambda from 0). Stage 1 (first half): image-report
    steps only, segmentation heads frozen. Stage 2: one image-report step, then one image-mask step with
    the standard Tversky loss (alpha_seg 0.75; (alpha, beta) = (0.3, 0.7) for nodules, (0.4, 0.6) for
    effusion, (0.5, 0.5) otherwise)."""
    patch = (10, 20, 20)
    vision = vit_config("base", width=768, patch=patch, pos="learned", learned_grid=(24, 24, 24))
    alpha = [0.3 if m == "lung_nodule" else 0.4 if m == "pleural_effusion" else 0.5 for m in SEGVL_MASKS]
    sampler = SamplerConfig(mode="whole", size=(480, 480), max_slices=240, text="report", include_masks=True,
                            mask_names=SEGVL_MASKS)
    return TrainConfig(
        recipe="segvl",
        model=ModelConfig(vision=vision, text=TextTowerConfig(name="minilm", pooling="cls"), embed_dim=512,
                          projection="mlp", init_logit_scale=math.log(1 / 0.07),
                          seg=VoxelHeadConfig(embed_dim=32, hidden=256), visual_enhancement=True),
        data=DataConfig(sampler=sampler, batch_size=8),
        loss=LossConfig(name="clip"),
        tasks={"masks": LossConfig(name="tversky", weights={"tversky": 0.75},
                                   options={"tversky": {"alpha": alpha, "beta": [1 - a for a in alpha]}})},
        stages=(StageConfig(fraction=0.5, frozen=("seg.",)), StageConfig(cycle=("pairs", "masks"))),
        optim=OptimConfig(name="adamw", lr=1.25e-5, warmup_steps=1000),
        eval=EvalConfig(prompt_style="ctclip", sampler=SamplerConfig(mode="whole", size=(480, 480), max_slices=240,
                                                                     text="report", mask_names=SEGVL_MASKS),
                        tasks=("segmentation",)),
        steps=100_000)


@register
def uniferum() -> TrainConfig:
    """Uniferum (METHODS.md; our reading of the released code plus the seed's options): one objective over
    every annotation a dataset has — report-volume SigLIP, labels as prompts (sigmoid(t cos + b), BCE on
    the labels the sample's dataset annotates only; train on a merged multi-site manifest, see
    docs/synthetic_cohort.md) and masks as prompts (Tversky through SegVL's voxel head) — with the body
    mask as an extra input channel and multi-scale token pooling; a RoPE ViT on whole volumes."""
    patch = (16, 16, 16)
    vision = vit_config("base", patch=patch, pos="rope", rope_base=1000.0, in_chans=2)
    sampler = SamplerConfig(mode="whole", size=(256, 256), max_slices=128, text="report", body_channel=True,
                            include_masks=True, mask_names=SEGVL_MASKS)
    return TrainConfig(
        recipe="uniferum",
        model=ModelConfig(vision=vision, text=TextTowerConfig(name="minilm", pooling="mean"), embed_dim=512,
                          image_pool="multiscale", projection="mlp", label_prompts=True,
                          seg=VoxelHeadConfig(embed_dim=32, hidden=256)),
        data=DataConfig(sampler=sampler, batch_size=8),
        loss=LossConfig(name="siglip", weights={"masked_bce": 1.0, "tversky": 1.0}),
        optim=OptimConfig(name="adamw", lr=1e-4, warmup_steps=1000),
        eval=EvalConfig(prompt_style=LABEL_HEAD,  # zero-shot by its own sigmoid label head, as it trains
                        sampler=SamplerConfig(mode="whole", size=(256, 256), max_slices=128, text="report",
                                              body_channel=True, mask_names=SEGVL_MASKS), tasks=("segmentation",)),
        steps=100_000)


@register
def colipri() -> TrainConfig:
    """COLIPRI (METHODS.md): Primus-M encoder (8^3 patches, SwiGLU, RoPE on 2/3 of the head dimensions,
    LayerScale 0.1, drop-path 0.2) on 2 mm volumes cropped to 160^3, attention pooling for image and text,
    reports rewritten into organ sections with positive and negative findings; image-report steps
    optimise CLIP + 0.5 x Opposite Sentence Loss (K = 8) + report generation (a 4-layer decoder
    cross-attending to the image tokens) and alternate 1:1 with MAE steps (75 % masking, light decoder)."""
    vision = vit_config("primus-m")
    sampler = SamplerConfig(mode="whole", size=(160, 160), max_slices=160, text="structured")
    return TrainConfig(
        recipe="colipri",
        model=ModelConfig(vision=vision, text=TextTowerConfig(name="minilm", pooling="attention"), embed_dim=768,
                          image_pool="attention", init_logit_scale=math.log(1 / 0.07),
                          decoder=DecoderConfig(width=512, depth=4, heads=8, max_length=256),
                          mae=MaeDecoderConfig(width=256, depth=2, heads=8), mae_ratio=0.75),
        data=DataConfig(sampler=sampler, batch_size=8, max_text_tokens=256, osl_pairs=8),
        loss=LossConfig(name="clip", weights={"osl": 0.5, "caption": 1.0}),
        tasks={"mae": LossConfig(name="mae")},
        stages=(StageConfig(cycle=("pairs", "mae")),),
        optim=OptimConfig(name="adamw", lr=1e-4, warmup_steps=1000),
        eval=EvalConfig(prompt_style="colipri", sampler=SamplerConfig(mode="whole", size=(160, 160), max_slices=160,
                                                                      text="structured"), tasks=("generation",)),
        steps=100_000)
