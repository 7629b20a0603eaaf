"""SegVL (Hu et al. 2025, "Segmentation Helps Understanding: Mask-Infused Vision-Language Pre-training for 3D
Medical Images"; METHODS.md): ViT-B over 20 x 20 x 10 patches with learned positions (CT-CLIP's input: 480 x 480,
at most 240 slices), InfoNCE, a light per-token MLP voxel head (E = 32) scored against "This is <mask name>"
anchors, visual enhancement (lambda from 0). Stage 1 (first half): image-report steps only, segmentation heads
frozen. Stage 2: every optimiser step is one update of L_IT + 0.75 L_VM from one image-report and one image-mask
micro-batch (the paper's appendix; ``together``), L_VM the standard Tversky loss (alpha_seg 0.75; (alpha, beta) =
(0.3, 0.7) for nodules, (0.4, 0.6) for effusion, (0.5, 0.5) otherwise).

METHODS.md's "alternate one image-report step and one image-mask step" misreads the appendix, whose gradient
accumulation of the two makes one update (ours until issue 17: two whole optimiser steps).

The paper beside ours ([paper]: its Sec. 2 and appendix A.3):

+---------------+---------------------------------+-----------------------------------+-------------------------------+
|               | paper                           | ours                              | deviation / why               |
+===============+=================================+===================================+===============================+
| vision tower  | ViT-Base, random init: 12       | vit_config('base', width=768):    | =                             |
|               | blocks x 768, 12 heads; no conv | 768 / 12 / 12, GELU MLP x 4       |                               |
|               | stem                            |                                   |                               |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| patch,        | 20 x 20 x 10 (x, y, z);         | (10, 20, 20) as (z, y, x);        | [ours] positions: ViT's       |
| positions     | positions not stated            | learned absolute, grid 24 x 24 x  | learned embeddings            |
|               |                                 | 24                                |                               |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| spacing, crop | CT-CLIP's data (not restated)   | CT-CLIP's PREPROCESS (0.75 x 0.75 | [ours] CT-CLIP's grid, for    |
|               |                                 | x 1.5 mm, HU / 1000); 480 x 480,  | which the patch was made      |
|               |                                 | at most 240 centred slices        |                               |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| text tower    | BioViL's CXR-BERT, CLS token    | the paper's (model.text)          | =                             |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| heads         | text, image and seg heads:      | projection mlp_ln (Linear,        | projections =; voxel head     |
|               | Linear, LeakyReLU, LayerNorm,   | LeakyReLU, LayerNorm, Linear);    | [ours] (its sizes are not     |
|               | Linear                          | voxel head Linear, GELU, Linear,  | stated)                       |
|               |                                 | E = 32, hidden 256; anchor head   |                               |
|               |                                 | as the paper                      |                               |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| loss          | L_IT (InfoNCE) + alpha_seg      | clip + 0.75 tversky               | [ours] standard Tversky: Eq.  |
|               | L_VM, L_VM the Tversky loss of  | (tasks.masks): 1 - TP / (TP + a   | 5 puts alpha on false         |
|               | its Eq. 5                       | FP + b FN), as MONAI's            | negatives, against its own    |
|               |                                 |                                   | intent                        |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| Tversky a, b  | (0.3, 0.7) nodules, (0.4, 0.6)  | the same per mask name            | =                             |
|               | effusion, (0.5, 0.5) others     |                                   |                               |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| temperature   | not stated (CLIP's              | log(1/0.07), t clamped at 100;    | [ours] CLIP's initial value   |
|               | implementation, gathered across | negatives gathered                |                               |
|               | GPUs)                           |                                   |                               |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| stages        | 1: alpha_seg 0, seg/text heads  | 1: first half, pairs only, 'seg.' | =                             |
|               | frozen. 2: alpha_seg 0.75, one  | frozen. 2: together, one update   |                               |
|               | update accumulates one          | of L_IT + 0.75 L_VM               |                               |
|               | image-report and one image-mask |                                   |                               |
|               | step                            |                                   |                               |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| visual enh.   | z = z_img + lambda              | visual_enhancement: lambda        | =                             |
|               | AvgPool(f_VE(X_seg)), lambda    | learnable, 0; 'seg.' (frozen in   |                               |
|               | learnable, 0 at stage 2's start | stage 1) holds it                 |                               |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| optimiser     | AdamW, cosine from 5e-6 to 5e-8 | AdamW (0.9, 0.95), wd 0.05; 5e-6  | = (warm-up, betas, wd [ours]: |
|               |                                 | peak, cosine to 0.01 x (5e-8),    | not stated)                   |
|               |                                 | 1000 warm-up steps                |                               |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| steps, batch  | 10^6 steps per stage; batch 32  | 2,000,000 steps in all (half per  | [ours] one batch size per     |
|               | (stage 1), 16 (stage 2),        | stage), batch 16, grad_accum 2    | run: stage 1 trains at stage  |
|               | gradient accumulation 2         |                                   | 2's 16 x 2, not 32 x 2        |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| evaluation    | zero-shot classification (18    | the paper's zero-shot tasks       | =                             |
|               | labels) and segmentation;       | (eval.tasks)                      |                               |
|               | fine-tuned segmentation         |                                   |                               |
+---------------+---------------------------------+-----------------------------------+-------------------------------+

Tags: [paper]/[code]/[reviews] say where the paper's value is stated; [ours]: our decision, with its reason.

Text tower hub id: ``microsoft/BiomedVLP-CXR-BERT-specialized``, BioViL's CXR-BERT (the paper: "initialised from
BioViL", "following Hamamci et al.")."""

from __future__ import annotations

import math

from ctvlp.data.sampling import SamplerConfig
from ctvlp.eval.config import EvalConfig
from ctvlp.recipes.ctclip import PREPROCESS as CTCLIP_PREPROCESS
from ctvlp.recipes.common import trusted_text
from ctvlp.recipes.run import RunConfig
from ctvlp.models.vit3d import vit_config
from ctvlp.models.vlp import ModelConfig
from ctvlp.models.voxel_head import VoxelHeadConfig
from ctvlp.train.config import DataConfig, LossConfig, StageConfig
from ctvlp.train.optim import OptimConfig


SEGVL_MASKS = ("lung", "heart", "aorta", "trachea_bronchi", "esophagus", "bone", "pleura", "mediastinum",
               "lung_nodule", "pleural_effusion")
"""Masks SegVL's image-mask steps train on (the synthetic cohort's names; a volume without one of them
has it marked unavailable, so it adds no loss term)."""


def recipe() -> RunConfig:
    """The recipe's complete config (see the module docstring)."""
    patch = (10, 20, 20)
    vision = vit_config("base", width=768, patch=patch, pos="learned", learned_grid=(24, 24, 24))
    alpha = [0.3 if m == "lung_nodule" else 0.4 if m == "pleural_effusion" else 0.5 for m in SEGVL_MASKS]
    sampler = SamplerConfig(mode="whole", size=(480, 480), max_slices=240, text="report", include_masks=True,
                            mask_names=SEGVL_MASKS)
    return RunConfig(
        recipe="segvl",
        # text encoder "initialised from BioViL ... following Hamamci et al. 2024": BioViL's CXR-BERT as CT-CLIP
        # loads it (CLS, 512 tokens; the paper states no length)
        model=ModelConfig(vision=vision, text=trusted_text("segvl", pooling="cls", max_length=512),
                          embed_dim=512,
                          projection="mlp_ln", init_logit_scale=math.log(1 / 0.07),
                          seg=VoxelHeadConfig(embed_dim=32, hidden=256), visual_enhancement=True),
        data=DataConfig(preprocess=CTCLIP_PREPROCESS, sampler=sampler, batch_size=16, max_text_tokens=512),
        loss=LossConfig(name="clip"),
        tasks={"masks": LossConfig(name="tversky", weights={"tversky": 0.75},
                                   options={"tversky": {"alpha": alpha, "beta": [1 - a for a in alpha]}})},
        stages=(StageConfig(fraction=0.5, frozen=("seg.",)), StageConfig(cycle=("pairs", "masks"), together=True)),
        optim=OptimConfig(name="adamw", lr=5e-6, min_lr_ratio=0.01, warmup_steps=1000),  # cosine 5e-6 -> 5e-8
        eval=EvalConfig(prompt_style="ctclip", sampler=SamplerConfig(mode="whole", size=(480, 480), max_slices=240,
                                                                     text="report", mask_names=SEGVL_MASKS),
                        tasks=("segmentation", "seg_probe")),  # its paper's evaluation (ctvlp.eval.paper)
        steps=2_000_000, grad_accum=2)  # 10^6 steps per stage, accumulation 2
