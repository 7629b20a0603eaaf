"""SCALE-VLP (Mahdizadeh et al. 2025, "SCALE-VLP: Soft-Weighted Contrastive Volumetric Vision-Language
Pre-training with Spatial-Knowledge Semantics", arXiv 2511.02996; our reconstruction, METHODS.md): a 3D ViT over
256 x 256 x 32 inputs with 16^3 patches, the SWCA loss -- SigLIP with soft targets q = 0.9 I + 0.1 A, A the
unnormalised blend (alpha 0.5) of spatial (token-feature mean/covariance kernels) and knowledge (the frozen text
tower's report-report similarity) affinities (METHODS.md's row-normalised W softened nothing; see
``ctvlp.losses.swca``) -- and a frozen BioClinicalBERT text tower.

No code is public and only the abstract and public reviews are known: most rows are ours. The paper beside ours
([reviews]: stated in the public reviews):

+---------------+---------------------------------+-----------------------------------+-------------------------------+
|               | paper                           | ours                              | deviation / why               |
+===============+=================================+===================================+===============================+
| vision tower  | 3D ViT, patch 16 [reviews];     | vit_config('base'): 792 wide, 12  | [ours] size: SigVLP's base    |
|               | width and depth not stated      | blocks, 12 heads; 16^3 patches    |                               |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| positions     | not stated                      | learned absolute, grid 8 x 16 x   | [ours]                        |
|               |                                 | 16 (evaluation reads up to 128    |                               |
|               |                                 | slices)                           |                               |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| aggregator    | a lightweight token aggregator  | attention pooling, MLP            | [ours] our reading            |
|               | and projection [reviews]        | projections, embed_dim 512        |                               |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| spacing, HU   | not stated                      | SigVLP's PREPROCESS: 1.5 mm       | [ours] the paper is silent    |
|               |                                 | isotropic, body crop, [-1000,     |                               |
|               |                                 | 1000] -> [-1, 1]                  |                               |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| input         | 256 x 256 x 32 [reviews]        | 32-slice chunks from a random     | = size; [ours] how the 32     |
|               |                                 | z-start, repeat padding, 256 x    | slices are chosen             |
|               |                                 | 256 centre crop/pad; the whole    |                               |
|               |                                 | report                            |                               |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| text tower    | BioClinicalBERT (hub id below)  | the paper's (model.text), frozen  | [ours] frozen: K_kn needs a   |
|               |                                 |                                   | frozen text model             |
|               |                                 |                                   | (METHODS.md)                  |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| loss          | SWCA: a pairwise loss softened  | swca soft_targets: q = 0.9 I +    | [ours] reconstruction. A, not |
|               | by spatial and knowledge        | 0.1 A, A = clamp(alpha K_spa + (1 | METHODS.md's row-normalised W |
|               | affinities (no code)            | - alpha) K_kn, 0, 1), not         | (~1/B): that softened         |
|               |                                 | normalised; K_kn from the frozen  | nothing, a W = 0.9 pair got   |
|               |                                 | text tower's report embeddings    | SigLIP's gradient (0.05159 vs |
|               |                                 |                                   | 0.05158)                      |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| alpha, eps    | alpha blends the affinities     | alpha 0.5, eps 0.1                | [ours]                        |
|               | (its Fig. 5 sweeps it); values  |                                   |                               |
|               | not stated                      |                                   |                               |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| logit init    | not stated                      | SigLIP's t = 10, b = -10; t       | [ours]                        |
|               |                                 | clamped at 100                    |                               |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| optimiser     | not stated                      | AdamW (0.9, 0.95), wd 0.05, lr    | [ours]                        |
|               |                                 | 1e-4, 1000 warm-up steps, cosine  |                               |
|               |                                 | to 0.1 x                          |                               |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| steps, batch  | not stated (its Fig. 2:         | 100,000 steps, batch 32           | [ours]                        |
|               | batch-size scaling)             |                                   |                               |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| evaluation    | CT-report retrieval,            | the paper's tasks on CT-RATE      | =                             |
|               | abnormality classification,     | (eval.tasks)                      |                               |
|               | report generation (ROUGE-L      |                                   |                               |
|               | 0.44, BERT-F1 0.89), zero-shot  |                                   |                               |
|               | on BIMCV-R                      |                                   |                               |
+---------------+---------------------------------+-----------------------------------+-------------------------------+

Tags: [paper]/[code]/[reviews] say where the paper's value is stated; [ours]: our decision, with its reason.

Text tower hub id: ``emilyalsentzer/Bio_ClinicalBERT``."""

from __future__ import annotations

from ctvlp.data.sampling import SamplerConfig
from ctvlp.eval.config import EvalConfig
from ctvlp.recipes.sigvlp import PREPROCESS as SIGVLP_PREPROCESS
from ctvlp.models.text import TextTowerConfig
from ctvlp.models.vit3d import vit_config
from ctvlp.models.vlp import ModelConfig
from ctvlp.recipes.common import train_depth
from ctvlp.recipes.run import RunConfig
from ctvlp.train.config import DataConfig, LossConfig
from ctvlp.train.optim import OptimConfig


def recipe() -> RunConfig:
    """The recipe's complete config (see the module docstring)."""
    vision = vit_config("base", patch=(16, 16, 16), pos="learned", learned_grid=(8, 16, 16))
    # BioClinicalBERT, frozen (the paper); pooling and token length: the paper is silent (ours: mean, 512)
    text = TextTowerConfig(name="emilyalsentzer/Bio_ClinicalBERT", pooling="mean", freeze="all", max_length=512)
    sampler = SamplerConfig(mode="chunk", chunk_depth=32, padding="repeat", size=(256, 256), text="report")
    return RunConfig(
        recipe="scalevlp",
        model=ModelConfig(vision=vision, text=text, embed_dim=512, image_pool="attention", projection="mlp"),
        data=DataConfig(preprocess=SIGVLP_PREPROCESS, sampler=sampler, batch_size=32, max_text_tokens=512),
        loss=LossConfig(name="swca", options={"swca": {"alpha": 0.5, "variant": "soft_targets", "eps": 0.1,
                                                       "knowledge": "report_emb"}}),
        optim=OptimConfig(name="adamw", lr=1e-4, warmup_steps=1000),
        eval=EvalConfig(sampler=SamplerConfig(mode="whole", size=(256, 256), max_slices=64, text="report"),
                        tasks=("generation_probe",),  # a decoder on the frozen encoder (ctvlp.eval.paper)
                        robustness_depth=train_depth(sampler)),
        steps=100_000)
