"""CT-CLIP baseline (Hamamci et al. 2024, "Developing Generalist Foundation Models from a Multimodal Dataset
for 3D Computed Tomography", arXiv 2403.17834; code: github.com/ibrahimethemhamamci/CT-CLIP): the authors' CTViT
(``ctvlp.models.ctvit``: 20 x 20 x 10 patches, 4 spatial + 4 temporal cosine-attention layers with causal PEG
positions, a cosine VQ codebook 8192 x 512, slab mean of the 24 x 24 x 24 token grid flattened and projected
bias-free to 512; temperature initialised to 1 and exponentiated), fixed in-plane crop/pad 480 x 480 and at most
240 slices at 0.75 x 0.75 x 1.5 mm, InfoNCE, prompts "X is present." / "X is not present.", AdamW.

METHODS.md's CT-CLIP section ("our ViT with pos=learned stands in for CTViT") predates this: ctclip is CTViT since
issue 17, and the joint-attention ViT is gone.

The paper beside ours ([code]: the authors' scripts/run_train.py, scripts/CTCLIPTrainer.py, ct_clip.py):

+---------------+---------------------------------+-----------------------------------+-------------------------------+
|               | paper                           | ours                              | deviation / why               |
+===============+=================================+===================================+===============================+
| vision tower  | CTViT: patch LayerNorm ->       | the same: ctvit_config('ctclip')  | =                             |
|               | Linear(10*20*20 -> 512) ->      | (ctvlp.models.ctvit; the authors' |                               |
|               | LayerNorm; 4 spatial + 4        | code and ours agree to 0.0,       |                               |
|               | temporal layers, width 512, 8   | tests/test_ctclip_equivalence.py) |                               |
|               | heads of 32, cosine attention   |                                   |                               |
|               | (scale 8), GEGLU x 4, VQ        |                                   |                               |
|               | codebook 8192 x 512 [code]      |                                   |                               |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| patch,        | 20 x 20 x 10 (x, y, z); PEG     | the same                          | =                             |
| positions     | depthwise 3^3 conv causal in z, |                                   |                               |
|               | a position-bias MLP in the      |                                   |                               |
|               | spatial layers [code]           |                                   |                               |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| pooling       | mean over the 24 slabs, flatten | the same, embed_dim 512           | =                             |
|               | 24 x 24 x 512, bias-free Linear |                                   |                               |
|               | 294912 -> 512 [code]            |                                   |                               |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| spacing       | 0.75 x 0.75 x 1.5 mm            | PREPROCESS: 0.75 x 0.75 x 1.5 mm, | =                             |
|               |                                 | no body crop                      |                               |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| HU window     | HU / 1000 clipped to [-1, 1]    | [-1000, 1000] -> [-1, 1]          | = (the same map)              |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| crop / pad    | centre crop/pad to 480 x 480 x  | sampler whole: 480 x 480, the 240 | =                             |
|               | 240 with -1                     | centred slices, padded to 240     |                               |
|               |                                 | with air (-1)                     |                               |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| text tower    | CXR-BERT-specialized (hub id    | the paper's (model.text); the     | =                             |
|               | below), CLS token, 512 tokens,  | packaged MiniLM only when set     |                               |
|               | bias-free Linear 768 -> 512     | (--set)                           |                               |
|               | [code]                          |                                   |                               |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| loss          | symmetric InfoNCE over the      | clip; negatives gathered across   | [ours] gather: more           |
|               | local GPU's batch only          | processes (loss.gather)           | negatives; SegVL's appendix   |
|               |                                 |                                   | fixes the same gap in         |
|               |                                 |                                   | CT-CLIP's code                |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| temperature   | log t initialised to 1, used as | init_logit_scale 1.0; t clamped   | [ours] the clamp, as          |
|               | exp(log t), never clamped       | at 100 (max_logit_scale)          | open_clip                     |
|               | [code]                          |                                   |                               |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| optimiser     | Adam (get_optimizer with wd 0), | AdamW with weight decay 0 (=      | =                             |
|               | betas (0.9, 0.99), grad-norm    | Adam), betas (0.9, 0.99), clip    |                               |
|               | clip 0.5 [code]                 | 0.5                               |                               |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| lr, schedule  | 1.25e-6 constant:               | 1.25e-6, no warm-up, constant     | =                             |
|               | CTClipTrainer's default; its    | (min_lr_ratio 1)                  |                               |
|               | warm-up/cosine class is never   |                                   |                               |
|               | used [code]                     |                                   |                               |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| steps, batch  | 100,001 steps, batch 8 [code:   | 100,000 steps, batch 8            | =                             |
|               | run_train.py]                   |                                   |                               |
+---------------+---------------------------------+-----------------------------------+-------------------------------+
| evaluation    | zero-shot, 18 labels, softmax   | prompt_style ctclip; the paper's  | =                             |
|               | over 'X is present.' / 'X is    | tasks (eval.tasks)                |                               |
|               | not present.'; retrieval        |                                   |                               |
+---------------+---------------------------------+-----------------------------------+-------------------------------+

Tags: [paper]/[code]/[reviews] say where the paper's value is stated; [ours]: our decision, with its reason.

Text tower hub id: ``microsoft/BiomedVLP-CXR-BERT-specialized``. The authors' scripts load it as a plain
``BertModel``; its hub repository ships its own model code (``auto_map``), so the recipe sets ``trust_remote_code``
and ``ctvlp.models.text`` unwraps the result to the same plain BERT."""

from __future__ import annotations

from ctvlp.data.preprocess import PreprocessConfig
from ctvlp.data.sampling import SamplerConfig
from ctvlp.eval.config import EvalConfig
from ctvlp.models.ctvit import ctvit_config
from ctvlp.recipes.common import trusted_text
from ctvlp.recipes.run import RunConfig
from ctvlp.models.vlp import ModelConfig
from ctvlp.train.config import DataConfig, LossConfig
from ctvlp.train.optim import OptimConfig


PREPROCESS = PreprocessConfig(spacing=(0.75, 0.75, 1.5), hu_window=(-1000.0, 1000.0), crop_to_body=False)
"""CT-CLIP's grid: 0.75 x 0.75 x 1.5 mm, HU / 1000 clipped to [-1, 1] (= the [-1000, 1000] window), the
full field of view centre-cropped/padded (no body crop) to 480 x 480 x 240 by the sampler."""


def recipe() -> RunConfig:
    """The recipe's complete config (see the module docstring)."""
    vision = ctvit_config("ctclip")
    # CT-CLIP's text tower: CXR-BERT-specialized, CLS token, 512 tokens (its BertTokenizer/BertModel calls); the
    # hub model ships its own code: trusted at the commit COLIPRI's package pins (ctvlp.models.text.CXR_BERT)
    text = trusted_text("ctclip", pooling="cls", max_length=512)
    sampler = SamplerConfig(mode="whole", size=(480, 480), max_slices=240, min_depth=240, padding="zero",
                            text="report")
    return RunConfig(
        recipe="ctclip",
        model=ModelConfig(vision=vision, text=text, embed_dim=512, init_logit_scale=1.0),
        data=DataConfig(preprocess=PREPROCESS, sampler=sampler, batch_size=8, max_text_tokens=512),
        loss=LossConfig(name="clip"),
        optim=OptimConfig(name="adamw", lr=1.25e-6, weight_decay=0.0, betas=(0.9, 0.99), warmup_steps=0,
                          min_lr_ratio=1.0, grad_clip=0.5),  # the authors' Adam (= AdamW, no decay), constant lr
        eval=EvalConfig(prompt_style="ctclip", sampler=SamplerConfig(mode="whole", size=(480, 480), max_slices=240,
                                                                     min_depth=240, padding="zero", text="report")),
        steps=100_000)
