"""COLIPRI ("Comprehensive language-image pre-training for 3D medical image understanding", arXiv 2510.15042;
package ``colipri`` on PyPI; METHODS.md): the authors' Primus-M encoder (8^3 patches, 16 Eva blocks of width 864
with 12 heads: SwiGLU with sub-LayerNorms, no key bias, RoPE over all 72 dims of each head with base 10000 as
24 + 24 + 24, LayerScale 0.1, drop-path 0.2; checked against their ``colipri`` package in
tests/test_colipri_equivalence.py) on 2 mm volumes cropped to 160^3; their image head (a 1x1x1 projection
864 -> 768, then 12-head attention pooling with the mean token as query) and attention pooling for text,
reports rewritten into organ sections with positive and negative findings; image-report steps
optimise CLIP + 0.5 x Opposite Sentence Loss (K = 8) + report generation (a 4-layer decoder
cross-attending to the image tokens) and alternate 1:1 with MAE steps (75 % masking, light decoder).

METHODS.md's "RoPE on 2/3 of each head's dimensions" reads Primus' ``rope_dim = head_dim / 1.5`` (48), but
timm's ``RotaryEmbeddingCat(48)`` on a 3D grid makes 48 / 4 = 12 bands per axis, 2 dims each: all 72 dims
rotate (measured on the authors' package; ours followed METHODS.md until issue 17).

The paper beside ours ([code]: the ``colipri`` 0.1.3 package's configs):

+---------------+---------------------------------+-----------------------------------+-------------------------------+
|               | paper                           | ours                              | deviation / why               |
+===============+=================================+===================================+===============================+
| vision tower  | Primus-M [code]: 16 Eva blocks, | vit_config('primus-m'): the same  | =                             |
|               | width 864, 12 heads; SwiGLU 8/3 | (within 1e-6 of the package,      |                               |
|               | with sub-LayerNorms, no key     | test_colipri_equivalence)         |                               |
|               | bias, LayerScale 0.1, drop-path |                                   |                               |
|               | 0.2, no absolute positions      |                                   |                               |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| patch, RoPE   | 8^3; timm RotaryEmbeddingCat:   | 8^3; RoPE 24 + 24 + 24 dims, base | = (METHODS.md's '2/3 of the   |
|               | all 72 dims of each head, 12    | 10000                             | dims' misreads timm's         |
|               | bands per axis, base 10000      |                                   | rope_dim; measured on the     |
|               | [code]                          |                                   | package)                      |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| image head    | 1x1x1 Conv3d 864 -> 768,        | projected_attention, 12 heads,    | =                             |
|               | 12-head attention pool, query   | embed_dim 768                     |                               |
|               | the masked mean [code]          |                                   |                               |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| spacing, HU   | RAS, 2 mm isotropic; clamp      | PREPROCESS: the same, no body     | =                             |
|               | [-1000, 1000] -> [-1, 1] [code] | crop                              |                               |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| crop / pad    | 160^3 in training [paper];      | 160 x 160, at most 160 centred    | = (centre crop [ours])        |
|               | 192^3, padded with the minimum, | slices; 192 at evaluation         |                               |
|               | at inference [code]             |                                   |                               |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| text tower    | CXR-BERT-specialized (hub id    | the paper's (model.text; pooling  | =                             |
|               | below), attention pooling (12   | mean_query), text_projection none |                               |
|               | heads, mean query), 512 tokens, |                                   |                               |
|               | no projector [code]             |                                   |                               |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| text          | GPT-4o structured reports:      | text structured: rule-based       | [ours] deterministic, offline |
|               | organ sections, positive and    | sectioner with negation detection |                               |
|               | negative findings               |                                   |                               |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| objectives    | CLIP + OSL + report generation  | clip + 0.5 osl (K = 8) + 1.0      | OSL K, weight and 1:1:        |
|               | on image-report batches; MAE    | caption; mae steps; cycle (pairs, | METHODS.md; caption weight    |
|               | (75 %) on image-only batches,   | mae) 1:1                          | [ours]                        |
|               | alternating                     |                                   |                               |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| decoders      | EVA-02 report decoder; a light  | report decoder 4 x 512, 8 heads;  | [ours] sizes not stated       |
|               | MAE decoder                     | MAE decoder 2 x 256, 8 heads      |                               |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| temperature   | not stated (the package's       | log(1/0.07), t clamped at 100     | [ours] CLIP's initial value   |
|               | zero-shot softmax: cos / 1)     |                                   |                               |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| optimiser     | not stated                      | AdamW (0.9, 0.95), wd 0.05, lr    | [ours]                        |
|               |                                 | 1e-4, 1000 warm-up steps, cosine  |                               |
|               |                                 | to 0.1 x                          |                               |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| steps, batch  | 125k steps, batch 16            | 125,000 steps, batch 16           | =                             |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| evaluation    | zero-shot (short prompts 'No X  | prompt_style colipri; the paper's | =                             |
|               | present' / 'X present'),        | tasks (eval.tasks)                |                               |
|               | retrieval, report generation,   |                                   |                               |
|               | segmentation                    |                                   |                               |
+---------------+---------------------------------+-----------------------------------+-------------------------------+

Tags: [paper]/[code]/[reviews] say where the paper's value is stated; [ours]: our decision, with its reason.

Text tower hub id: ``microsoft/BiomedVLP-CXR-BERT-specialized`` (``trust_remote_code``), as the package loads it."""

from __future__ import annotations

import math

from ctvlp.data.preprocess import PreprocessConfig
from ctvlp.data.sampling import SamplerConfig
from ctvlp.eval.config import EvalConfig
from ctvlp.models.decoder import DecoderConfig
from ctvlp.models.mae import MaeDecoderConfig
from ctvlp.recipes.common import trusted_text
from ctvlp.recipes.run import RunConfig
from ctvlp.models.vit3d import vit_config
from ctvlp.models.vlp import ModelConfig
from ctvlp.train.config import DataConfig, LossConfig, StageConfig
from ctvlp.train.optim import OptimConfig


PREPROCESS = PreprocessConfig(spacing=(2.0, 2.0, 2.0), hu_window=(-1000.0, 1000.0), crop_to_body=False)
"""COLIPRI's grid (its ``colipri`` package): RAS, 2 mm isotropic, clamp [-1000, 1000] -> [-1, 1], the full
field of view; the sampler crops 160^3 for training (the paper) and 192^3 for evaluation (the package)."""


def recipe() -> RunConfig:
    """The recipe's complete config (see the module docstring)."""
    vision = vit_config("primus-m")
    sampler = SamplerConfig(mode="whole", size=(160, 160), max_slices=160, text="structured")
    return RunConfig(
        recipe="colipri",
        # its package's text tower: CXR-BERT-specialized (trust_remote_code, pinned commit), masked-mean-query
        # attention pooling (AttentionPool1D, 12 heads), 512 tokens (training reports: data.max_text_tokens)
        model=ModelConfig(vision=vision, text=trusted_text("colipri", pooling="mean_query", max_length=512),
                          embed_dim=768,
                          text_projection="none",  # its package: "We didn't use a projector during pre-training"
                          image_pool="projected_attention", image_pool_heads=12, init_logit_scale=math.log(1 / 0.07),
                          decoder=DecoderConfig(width=512, depth=4, heads=8, max_length=256),
                          mae=MaeDecoderConfig(width=256, depth=2, heads=8), mae_ratio=0.75),
        data=DataConfig(preprocess=PREPROCESS, sampler=sampler, batch_size=16, max_text_tokens=256, osl_pairs=8),
        loss=LossConfig(name="clip", weights={"osl": 0.5, "caption": 1.0}),
        tasks={"mae": LossConfig(name="mae")},
        stages=(StageConfig(cycle=("pairs", "mae")),),
        optim=OptimConfig(name="adamw", lr=1e-4, warmup_steps=1000),
        eval=EvalConfig(prompt_style="colipri", sampler=SamplerConfig(mode="whole", size=(192, 192), max_slices=192,
                                                                      text="structured"),
                        tasks=("generation", "seg_probe")),  # its paper's evaluation (ctvlp.eval.paper)
        steps=125_000)  # the paper: batch 16, 125k steps
