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
``ctvlp.data.prompts.corpus_style``): the reports never write "medical material", they write "A
venous port is seen in the right chest wall.".

Our own recipe (no paper): SigVLP (arXiv 2602.21735), whose model it scales down, beside it; every row is [ours]
and the last column says why:

+---------------+---------------------------------+-----------------------------------+-------------------------------+
|               | paper                           | ours                              | deviation / why               |
+===============+=================================+===================================+===============================+
| vision tower  | SigVLP base: 792 wide, 12       | 192 wide, 4 blocks, 3 heads, conv | a 2-core CPU, 10 minutes      |
|               | blocks, 12 heads                | stem                              |                               |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| patch, RoPE   | 16^3; RoPE base 1000            | 4 x 8 x 8; 3D RoPE base 1000      | patches a 3 mm / 6 mm grid    |
|               |                                 |                                   | can afford                    |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| spacing, HU   | 1.5 mm slices; one [-1000,      | 3 x 3 x 6 mm, anti-aliased; 4     | speed; lung-density findings  |
|               | 1000] window                    | windows as channels               | need the lung windows (probe  |
|               |                                 | (DEMO_WINDOWS)                    | AUROC above)                  |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| chunk         | 32-slice chunks, repeat         | 16-slice chunks (96 mm), repeat   | a synthetic chest is ~14      |
|               | padding, organ sentences        | padding, organ sentences; random  | slices of 6 mm: one chunk     |
|               |                                 | 32 x 40 in-plane crop             |                               |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| text tower    | (SigVLP: not stated)            | the packaged MiniLM, frozen, 64   | the CPU's time goes to the    |
|               |                                 | tokens, each sentence once        | vision tower                  |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| loss          | SigLIP over chunk-text pairs    | sentence_sigmoid                  | trains zero-shot's            |
|               |                                 | (findings-matched positives, own  | comparison; keeps retrieval   |
|               |                                 | t and b) + 0.1 siglip             |                               |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| pooling       | mean, linear projections        | max-pooled tokens, mlp_bn         | small findings are not        |
|               |                                 | projections, embed_dim 256        | diluted; BN breaks the        |
|               |                                 |                                   | collapsed start               |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| optimiser     | Muon + AdamW                    | Muon + AdamW, AdamW lr 1e-3, 20   | 800 steps                     |
|               |                                 | warm-up steps, cosine to 0.1 x    |                               |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| steps, batch  | (not stated)                    | 800 steps, batch 32               | <= 10 min on 2 cores          |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| evaluation    | zero-shot classification,       | corpus prompts (the reports' own  | the cohort's reports say 'A   |
|               | retrieval, ...                  | sentences)                        | venous port is seen ...'      |
+---------------+---------------------------------+-----------------------------------+-------------------------------+

Its targets: mean AUROC >= 0.80 and every label >= 0.65 on the synthetic cohort, <= 10 min and <= 6 GB."""

from __future__ import annotations

from ctvlp.data.preprocess import PreprocessConfig
from ctvlp.data.prompt_names import CORPUS
from ctvlp.data.sampling import SamplerConfig
from ctvlp.eval.config import EvalConfig
from ctvlp.models.text import TextTowerConfig
from ctvlp.models.vit3d import vit_config
from ctvlp.models.vlp import ModelConfig
from ctvlp.recipes.common import train_depth
from ctvlp.recipes.run import RunConfig
from ctvlp.train.config import DataConfig, LossConfig
from ctvlp.train.optim import OptimConfig


DEMO_WINDOWS: tuple[tuple[float, float], ...] = ((-1000.0, 1000.0), (-1000.0, -500.0), (-1000.0, -850.0),
                                                 (150.0, 950.0))
"""HU windows of the demo's input channels: whole range, lung parenchyma, low attenuation (emphysema),
calcium (plaques above contrast-filled blood)."""


PREPROCESS = PreprocessConfig(spacing=(3.0, 3.0, 6.0), antialias=True)
"""The demo's cache: 3 x 3 x 6 mm, anti-aliased, so that a synthetic chest is ~14 x 24 x 32 voxels, which a
2-core CPU trains on at ~90 samples/s (lesions are synthesised at the ``large`` size to span voxels)."""


def recipe() -> RunConfig:
    """The recipe's complete config (see the module docstring)."""
    vision = vit_config("small", width=192, depth=4, heads=3, patch=(4, 8, 8), pos="rope", rope_base=1000.0,
                        stem="conv", in_chans=len(DEMO_WINDOWS))
    text = TextTowerConfig(name="minilm", pooling="mean", freeze="all", max_length=64)
    sampler = SamplerConfig(mode="chunk", chunk_depth=16, padding="repeat", size=(32, 40), random_crop=True,
                            text="organs", windows=DEMO_WINDOWS)
    return RunConfig(
        recipe="demo",
        model=ModelConfig(vision=vision, text=text, embed_dim=256, image_pool="max", projection="mlp_bn",
                          text_input="sentences", sentence_match="findings", sentence_logits=True),
        data=DataConfig(preprocess=PREPROCESS, sampler=sampler, batch_size=32, num_workers=2),
        loss=LossConfig(name="sentence_sigmoid", weights={"siglip": 0.1}),
        optim=OptimConfig(name="muon", lr=1e-3, warmup_steps=20),
        eval=EvalConfig(prompt_style=CORPUS, sampler=SamplerConfig(mode="whole", text="report", size=(32, 40),
                                                                   windows=DEMO_WINDOWS),
                        batch_size=32, robustness_depth=train_depth(sampler)),
        steps=800, log_every=10, ckpt_every=200)
