"""Uniferum (METHODS.md; our reading of the released code plus the seed's options): one objective over
every annotation a dataset has — report-volume SigLIP, labels as prompts (sigmoid(t cos + b), BCE on
the labels the sample's dataset annotates only; train on a merged multi-site manifest, see
docs/synthetic_cohort.md) and masks as prompts (Tversky through SegVL's voxel head) — with the body
mask as an extra input channel and multi-scale token pooling; a RoPE ViT on whole volumes."""

from __future__ import annotations

from ctvlp.data.preprocess import PreprocessConfig
from ctvlp.data.sampling import SamplerConfig
from ctvlp.eval.names import LABEL_HEAD
from ctvlp.models.text import TextTowerConfig
from ctvlp.models.vit3d import vit_config
from ctvlp.models.vlp import ModelConfig
from ctvlp.models.voxel_head import VoxelHeadConfig
from ctvlp.recipes.segvl import SEGVL_MASKS
from ctvlp.train.config import DataConfig, EvalConfig, LossConfig, TrainConfig
from ctvlp.train.optim import OptimConfig


def recipe() -> TrainConfig:
    """The recipe's complete config (see the module docstring)."""
    patch = (16, 16, 16)
    vision = vit_config("base", patch=patch, pos="rope", rope_base=1000.0, in_chans=2)
    sampler = SamplerConfig(mode="whole", size=(256, 256), max_slices=128, text="report", body_channel=True,
                            include_masks=True, mask_names=SEGVL_MASKS)
    return TrainConfig(
        recipe="uniferum",
        # released code: one fused stream through BiomedBERT's first 4 layers, no separate text tower to name
        model=ModelConfig(vision=vision, text=TextTowerConfig(name="minilm", pooling="mean"), embed_dim=512,
                          image_pool="multiscale", projection="mlp", label_prompts=True,
                          seg=VoxelHeadConfig(embed_dim=32, hidden=256)),
        data=DataConfig(preprocess=PreprocessConfig(spacing=(1.5, 1.5, 3.0), crop_to_body=True), sampler=sampler,
                        batch_size=8),
        loss=LossConfig(name="siglip", weights={"masked_bce": 1.0, "tversky": 1.0}),
        optim=OptimConfig(name="adamw", lr=1e-4, warmup_steps=1000),
        eval=EvalConfig(prompt_style=LABEL_HEAD,  # zero-shot by its own sigmoid label head, as it trains
                        sampler=SamplerConfig(mode="whole", size=(256, 256), max_slices=128, text="report",
                                              body_channel=True, mask_names=SEGVL_MASKS), tasks=("segmentation",)),
        steps=100_000)
