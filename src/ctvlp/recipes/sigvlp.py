"""SigVLP (arXiv 2602.21735; "RoPE volumes as sequences of chunks", METHODS.md): RoPE ViT-base (base 1000,
16^3 patches, no absolute positions) on 32-slice chunks at 1.5 mm with 256 x 256 in-plane, paired with organ-wise
sentences (organ z-extents from masks, else a z-prior), repeat padding, pairwise sigmoid loss (t = exp(log 10),
b = -10), Muon for 2-D block weights and AdamW for the rest.

METHODS.md's z-prior for data without organ masks is :data:`ctvlp.data.sampling.ORGAN_Z_PRIOR` (missing until
issue 17: such chunks silently paired with the impressions or the whole report).

The paper beside ours ([code]: the authors' released code as METHODS.md reads it):

+---------------+---------------------------------+-----------------------------------+-------------------------------+
|               | paper                           | ours                              | deviation / why               |
+===============+=================================+===================================+===============================+
| vision tower  | plain ViT, no absolute          | vit_config('base'): 792 wide, 12  | = (base)                      |
|               | positions; sizes small          | blocks, 12 heads (66 dims each),  |                               |
|               | 396/12/6, base 792/12/12, large | GELU MLP x 4                      |                               |
|               | 1056/24/16 (width/blocks/heads) |                                   |                               |
|               | [code]                          |                                   |                               |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| patch         | 16^3 patch convolution          | 16 x 16 x 16                      | =                             |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| positions     | RoPE in every attention layer,  | 3D RoPE: 22 + 22 + 22 dims of     | [ours] the 3D split: the      |
|               | base 1000 (its ablation: 1000   | each head over (z, y, x), base    | released kernel is broken (1D |
|               | slightly beats 10000); the      | 1000, every dim rotates           | fallback, wrong rotation      |
|               | released kernel falls back to   |                                   | pairs)                        |
|               | 1D RoPE over the flattened      |                                   |                               |
|               | index                           |                                   |                               |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| spacing       | 1.5 mm slices; 256 x 256        | PREPROCESS: 1.5 x 1.5 x 1.5 mm,   | [ours] 1.5 mm in-plane: 256 x |
|               | in-plane, its spacing not       | body crop                         | 1.5 = 384 mm holds a          |
|               | stated                          |                                   | body-cropped chest            |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| HU window     | not stated                      | [-1000, 1000] -> [-1, 1]          | [ours] METHODS.md's default   |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| crop, chunk   | chunks of consecutive slices, z | chunk: 32 slices (48 mm, 2        | [ours] depth 32, METHODS.md's |
|               | unconstrained; chunk depth a    | patches) from a random z-start;   | default                       |
|               | setting                         | 256 x 256 centre crop/pad         |                               |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| padding       | repeat slices (beats zero       | repeat                            | =                             |
|               | padding, most for one-slice     |                                   |                               |
|               | inputs)                         |                                   |                               |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| text pairing  | organ-wise sentences of the     | organs: z-extents from the organ  | [ours] the z-prior: plain     |
|               | organs in the chunk             | masks; without masks from         | CT-RATE has no organ masks    |
|               |                                 | ORGAN_Z_PRIOR                     |                               |
|               |                                 | (ctvlp.data.sampling)             |                               |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| text tower    | not stated                      | the packaged all-MiniLM-L6-v2,    | [ours] the paper is silent    |
|               |                                 | mean pooling (model.text)         |                               |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| loss          | pairwise sigmoid (SigLIP)       | siglip; negatives gathered across | = (gather [ours])             |
|               |                                 | processes                         |                               |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| logit init    | t = exp(log 10), b = -10, both  | init_logit_scale log 10,          | = (clamp [ours], open_clip)   |
|               | learnable [code]                | init_logit_bias -10; t clamped at |                               |
|               |                                 | 100                               |                               |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| optimiser     | Muon for the 2-D weights of     | muon: torch.optim.Muon (momentum  | =                             |
|               | both towers' blocks, AdamW      | 0.95, 5 Newton-Schulz steps) +    |                               |
|               | (0.9, 0.95) for the rest [code] | AdamW (0.9, 0.95), wd 0.05        |                               |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| lr, schedule  | not stated                      | AdamW 1e-4, Muon 0.02 peak; 1000  | [ours] the paper is silent    |
|               |                                 | warm-up steps, cosine to 0.1 x    |                               |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| steps, batch  | up to 230k steps; batch not     | 230,000 steps, batch 32           | steps =; batch [ours] (the    |
|               | stated                          |                                   | paper is silent)              |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| embedding     | not stated                      | embed_dim 512, mean-pooled        | [ours]                        |
|               |                                 | tokens, linear projections        |                               |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| evaluation    | zero-shot abnormality and organ | the paper's tasks (eval.tasks)    | =                             |
|               | classification, retrieval,      |                                   |                               |
|               | segmentation probe, stability   |                                   |                               |
|               | across slice counts             |                                   |                               |
+---------------+---------------------------------+-----------------------------------+-------------------------------+

Tags: [paper]/[code]/[reviews] say where the paper's value is stated; [ours]: our decision, with its reason.

The paper names no text encoder: the packaged all-MiniLM-L6-v2 is our choice, not a stand-in for one."""

from __future__ import annotations

from ctvlp.data.preprocess import PreprocessConfig
from ctvlp.data.sampling import SamplerConfig
from ctvlp.eval.config import EvalConfig
from ctvlp.models.text import TextTowerConfig
from ctvlp.models.vit3d import vit_config
from ctvlp.models.vlp import ModelConfig
from ctvlp.recipes.common import train_depth
from ctvlp.recipes.run import RunConfig
from ctvlp.train.config import DataConfig, LossConfig
from ctvlp.train.optim import OptimConfig


PREPROCESS = PreprocessConfig(spacing=(1.5, 1.5, 1.5), hu_window=(-1000.0, 1000.0))
"""1.5 mm slices (the paper; a 32-slice chunk is 48 mm), 1.5 mm in-plane [ours: the paper states 256 x 256
in-plane, not its spacing; 256 x 1.5 mm = 384 mm holds a body-cropped chest], [-1000, 1000] -> [-1, 1]."""


def recipe() -> RunConfig:
    """The recipe's complete config (see the module docstring)."""
    vision = vit_config("base", patch=(16, 16, 16), pos="rope", rope_base=1000.0)
    text = TextTowerConfig(name="minilm", pooling="mean")  # SigVLP names no text encoder (seed, METHODS.md): MiniLM
    sampler = SamplerConfig(mode="chunk", chunk_depth=32, padding="repeat", size=(256, 256), text="organs")
    return RunConfig(
        recipe="sigvlp",
        model=ModelConfig(vision=vision, text=text, embed_dim=512),
        data=DataConfig(preprocess=PREPROCESS, sampler=sampler, batch_size=32),
        loss=LossConfig(name="siglip"),
        optim=OptimConfig(name="muon", lr=1e-4, warmup_steps=1000),
        eval=EvalConfig(sampler=SamplerConfig(mode="whole", size=(256, 256), text="report"),
                        tasks=("organs", "seg_probe", "robustness"),  # its paper's evaluation (ctvlp.eval.paper)
                        organ_chunk_depth=32, robustness_depth=train_depth(sampler)),
        steps=230_000)  # the paper: up to 230k steps
