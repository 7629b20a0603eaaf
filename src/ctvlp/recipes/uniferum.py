"""Uniferum (arXiv 2509.01554, "Unified Supervision For Vision-Language Modeling in 3D Computed Tomography";
code: github.com/howchihlee/uniferum; METHODS.md: our reading of the released code plus the seed's options): one
objective over every annotation a dataset has -- report-volume SigLIP, labels as prompts (sigmoid(t cos + b), BCE
on the labels the sample's dataset annotates only; train on a merged multi-site manifest, see
docs/synthetic_cohort.md) and masks as prompts (Tversky through SegVL's voxel head) -- with the body mask as an
extra input channel and multi-scale token pooling; a RoPE ViT on whole volumes.

The released code is a different model (one stream: CNN tokens and the prompt through one BERT); METHODS.md takes
its unifying idea and the seed's parts, so most rows are ours. The code beside ours ([code]: configs/CTRATE_SEG.yaml,
img_utils/standardize_nii.py, models/):

+---------------+---------------------------------+-----------------------------------+-------------------------------+
|               | paper                           | ours                              | deviation / why               |
+===============+=================================+===================================+===============================+
| vision tower  | 3D EfficientNet-B0 (timm_3d,    | two towers: vit_config('base')    | [ours] METHODS.md: the code's |
|               | ImageNet weights); its tokens   | with RoPE (base 1000), 16^3       | unifying idea, the seed's     |
|               | enter a 4-layer BiomedBERT      | patches, 2 input channels (HU,    | parts (body channel,          |
|               | together with the prompt: one   | body mask)                        | multi-scale pooling)          |
|               | stream [code]                   |                                   |                               |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| pooling       | multi-scale token pooling       | multiscale: global mean + 2 x 2 x | =                             |
|               | [seed]                          | 2 cell means, MLP projection,     |                               |
|               |                                 | embed_dim 512                     |                               |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| spacing       | 1 mm isotropic after a body     | 1.5 x 2 x 2 mm (x, y, z), body    | = (one resampling instead of  |
|               | crop (HU > -150, largest        | crop: the resized grid, reached   | two)                          |
|               | component), then resized (next  | in one resampling                 |                               |
|               | row) [code]                     |                                   |                               |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| HU, crop      | clip [-1000, 1000]; crop/pad    | [-1000, 1000] -> [-1, 1]; 160 x   | =                             |
|               | 384 x 320 x 256 mm, resized to  | 256 (y, x) centre crop/pad, at    |                               |
|               | 256 x 160 x 128 [code]          | most 128 slices                   |                               |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| text tower    | BiomedBERT abstract-fulltext    | the packaged MiniLM (model.text)  | [ours] the code has no        |
|               | (hub id below), 4 layers [code] |                                   | separate text tower to name   |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| loss          | labels: BCE on [CLS]; masks:    | siglip + masked_bce 1.0 (labels   | [ours] METHODS.md: focal or   |
|               | sigmoid focal, weight 10;       | as prompts) + tversky 1.0         | Tversky; the report term is   |
|               | missing annotations masked      | (SegVL's voxel head)              | ours                          |
|               | [code]                          |                                   |                               |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| logit init    | none (a linear head)            | reports: SigLIP's t = 10, b =     | [ours]                        |
|               |                                 | -10; labels: t = 10, b = 0        |                               |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| optimiser     | AdamW (HF Trainer), lr 5e-5, wd | AdamW (0.9, 0.95), lr 5e-5, wd    | = (schedule after warm-up     |
|               | 1e-4, 25 warm-up steps [code]   | 1e-4, 25 warm-up steps, cosine to | [ours]: HF's default is       |
|               |                                 | 0.1 x                             | linear to 0)                  |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| steps, batch  | 25,000 steps, batch 8 x 8       | 25,000 steps, batch 8, grad_accum | =                             |
|               | accumulation [code]             | 8                                 |                               |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| evaluation    | AUROC on CT-RATE (+7 points),   | zero-shot by the label head       | =                             |
|               | zero-shot on RAD-ChestCT and    | (prompt_style label_head); the    |                               |
|               | INSPECT                         | paper's tasks (eval.tasks)        |                               |
+---------------+---------------------------------+-----------------------------------+-------------------------------+

Tags: [paper]/[code]/[reviews] say where the paper's value is stated; [ours]: our decision, with its reason.

The code's fused encoder: the first 4 layers of ``microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract-fulltext``
(prompt and image tokens in one sequence); ours is a dual-tower model with the packaged MiniLM."""

from __future__ import annotations

from ctvlp.data.preprocess import PreprocessConfig
from ctvlp.data.prompt_names import LABEL_HEAD
from ctvlp.data.sampling import SamplerConfig
from ctvlp.eval.config import EvalConfig
from ctvlp.models.text import TextTowerConfig
from ctvlp.models.vit3d import vit_config
from ctvlp.models.vlp import ModelConfig
from ctvlp.models.voxel_head import VoxelHeadConfig
from ctvlp.recipes.segvl import SEGVL_MASKS
from ctvlp.recipes.run import RunConfig
from ctvlp.train.config import DataConfig, LossConfig
from ctvlp.train.optim import OptimConfig


PREPROCESS = PreprocessConfig(spacing=(1.5, 2.0, 2.0), hu_window=(-1000.0, 1000.0), crop_to_body=True)
"""The released code's grid: body-cropped, clipped to [-1000, 1000], resampled to 1 mm, crop/pad 384 x 320 x 256
(x, y, z) and resized to 256 x 160 x 128, i.e. 1.5 x 2 x 2 mm; here resampled once to that grid, and the
sampler crops/pads 160 x 256 in-plane (y, x) and at most 128 slices."""


def recipe() -> RunConfig:
    """The recipe's complete config (see the module docstring)."""
    patch = (16, 16, 16)
    vision = vit_config("base", patch=patch, pos="rope", rope_base=1000.0, in_chans=2)
    sampler = SamplerConfig(mode="whole", size=(160, 256), max_slices=128, text="report", body_channel=True,
                            include_masks=True, mask_names=SEGVL_MASKS)
    return RunConfig(
        recipe="uniferum",
        # released code: one fused stream through BiomedBERT's first 4 layers, no separate text tower to name
        model=ModelConfig(vision=vision, text=TextTowerConfig(name="minilm", pooling="mean"), embed_dim=512,
                          image_pool="multiscale", projection="mlp", label_prompts=True,
                          seg=VoxelHeadConfig(embed_dim=32, hidden=256)),
        data=DataConfig(preprocess=PREPROCESS, sampler=sampler, batch_size=8),
        loss=LossConfig(name="siglip", weights={"masked_bce": 1.0, "tversky": 1.0}),
        optim=OptimConfig(name="adamw", lr=5e-5, weight_decay=1e-4, warmup_steps=25),  # configs/CTRATE_SEG.yaml
        eval=EvalConfig(prompt_style=LABEL_HEAD,  # zero-shot by its own sigmoid label head, as it trains
                        sampler=SamplerConfig(mode="whole", size=(160, 256), max_slices=128, text="report",
                                              body_channel=True, mask_names=SEGVL_MASKS), tasks=("segmentation",)),
        steps=25_000, grad_accum=8)  # the released config: 25,000 steps of 8 x 8
