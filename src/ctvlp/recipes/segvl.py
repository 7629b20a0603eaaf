"""SegVL (METHODS.md): ViT-B over 20 x 20 x 10 patches with learned positions (CT-CLIP's input:
480 x 480, at most 240 slices), InfoNCE, a light per-token MLP voxel head (E = 32) scored against
"This is <mask name>" anchors, visual enhancement (lambda from 0). Stage 1 (first half): image-report
steps only, segmentation heads frozen. Stage 2: every optimiser step is one update of L_IT + 0.75 L_VM
from one image-report and one image-mask micro-batch (the paper's appendix; ``together``), L_VM the
standard Tversky loss (alpha_seg 0.75; (alpha, beta) = (0.3, 0.7) for nodules, (0.4, 0.6) for
effusion, (0.5, 0.5) otherwise)."""

from __future__ import annotations

import math

from ctvlp.data.sampling import SamplerConfig
from ctvlp.recipes.ctclip import PREPROCESS as CTCLIP_PREPROCESS
from ctvlp.models.text import TextTowerConfig
from ctvlp.recipes.common import CXR_BERT, CXR_BERT_REVISION
from ctvlp.models.vit3d import vit_config
from ctvlp.models.vlp import ModelConfig
from ctvlp.models.voxel_head import VoxelHeadConfig
from ctvlp.train.config import DataConfig, EvalConfig, LossConfig, StageConfig, TrainConfig
from ctvlp.train.optim import OptimConfig


SEGVL_MASKS = ("lung", "heart", "aorta", "trachea_bronchi", "esophagus", "bone", "pleura", "mediastinum",
               "lung_nodule", "pleural_effusion")
"""Masks SegVL's image-mask steps train on (the synthetic cohort's names; a volume without one of them
has it marked unavailable, so it adds no loss term)."""


def recipe() -> TrainConfig:
    """The recipe's complete config (see the module docstring)."""
    patch = (10, 20, 20)
    vision = vit_config("base", width=768, patch=patch, pos="learned", learned_grid=(24, 24, 24))
    alpha = [0.3 if m == "lung_nodule" else 0.4 if m == "pleural_effusion" else 0.5 for m in SEGVL_MASKS]
    sampler = SamplerConfig(mode="whole", size=(480, 480), max_slices=240, text="report", include_masks=True,
                            mask_names=SEGVL_MASKS)
    return TrainConfig(
        recipe="segvl",
        # text encoder "initialised from BioViL ... following Hamamci et al. 2024": BioViL's CXR-BERT as CT-CLIP
        # loads it (CLS, 512 tokens; the paper states no length)
        model=ModelConfig(vision=vision, text=TextTowerConfig(name=CXR_BERT, revision=CXR_BERT_REVISION,
                                                              trust_remote_code=True, pooling="cls", max_length=512),
                          embed_dim=512,
                          projection="mlp", init_logit_scale=math.log(1 / 0.07),
                          seg=VoxelHeadConfig(embed_dim=32, hidden=256), visual_enhancement=True),
        data=DataConfig(preprocess=CTCLIP_PREPROCESS, sampler=sampler, batch_size=8, max_text_tokens=512),
        loss=LossConfig(name="clip"),
        tasks={"masks": LossConfig(name="tversky", weights={"tversky": 0.75},
                                   options={"tversky": {"alpha": alpha, "beta": [1 - a for a in alpha]}})},
        stages=(StageConfig(fraction=0.5, frozen=("seg.",)), StageConfig(cycle=("pairs", "masks"), together=True)),
        optim=OptimConfig(name="adamw", lr=1.25e-5, warmup_steps=1000),
        eval=EvalConfig(prompt_style="ctclip", sampler=SamplerConfig(mode="whole", size=(480, 480), max_slices=240,
                                                                     text="report", mask_names=SEGVL_MASKS),
                        tasks=("segmentation",)),
        steps=100_000)
