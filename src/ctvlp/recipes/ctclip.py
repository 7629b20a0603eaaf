"""CT-CLIP baseline (Hamamci et al. 2024): the authors' CTViT (``ctvlp.models.ctvit``: 20 x 20 x 10 patches,
4 spatial + 4 temporal cosine-attention layers with causal PEG positions, a cosine VQ codebook 8192 x 512,
slab mean of the 24 x 24 x 24 token grid flattened and projected bias-free to 512; temperature initialised
to 1 and exponentiated), fixed in-plane crop/pad 480 x 480 and at most 240 slices at 0.75 x 0.75 x 1.5 mm, InfoNCE,
prompts "X is present." / "X is not present.", AdamW."""

from __future__ import annotations

from ctvlp.data.preprocess import PreprocessConfig
from ctvlp.data.sampling import SamplerConfig
from ctvlp.models.ctvit import ctvit_config
from ctvlp.models.text import TextTowerConfig
from ctvlp.recipes.common import CXR_BERT, CXR_BERT_REVISION
from ctvlp.models.vlp import ModelConfig
from ctvlp.train.config import DataConfig, EvalConfig, LossConfig, TrainConfig
from ctvlp.train.optim import OptimConfig


PREPROCESS = PreprocessConfig(spacing=(0.75, 0.75, 1.5), hu_window=(-1000.0, 1000.0), crop_to_body=False)
"""CT-CLIP's grid: 0.75 x 0.75 x 1.5 mm, HU / 1000 clipped to [-1, 1] (= the [-1000, 1000] window), the
full field of view centre-cropped/padded (no body crop) to 480 x 480 x 240 by the sampler."""


def recipe() -> TrainConfig:
    """The recipe's complete config (see the module docstring)."""
    vision = ctvit_config("ctclip")
    # CT-CLIP's text tower: CXR-BERT-specialized, CLS token, 512 tokens (its BertTokenizer/BertModel calls); the
    # hub model ships its own code: trusted at the commit COLIPRI's package pins (ctvlp.recipes.common.CXR_BERT)
    text = TextTowerConfig(name=CXR_BERT, revision=CXR_BERT_REVISION, trust_remote_code=True, pooling="cls",
                           max_length=512)
    sampler = SamplerConfig(mode="whole", size=(480, 480), max_slices=240, min_depth=240, padding="zero",
                            text="report")
    return TrainConfig(
        recipe="ctclip",
        model=ModelConfig(vision=vision, text=text, embed_dim=512, init_logit_scale=1.0),
        data=DataConfig(preprocess=PREPROCESS, sampler=sampler, batch_size=8, max_text_tokens=512),
        loss=LossConfig(name="clip"),
        optim=OptimConfig(name="adamw", lr=1.25e-5, warmup_steps=1000),
        eval=EvalConfig(prompt_style="ctclip", sampler=SamplerConfig(mode="whole", size=(480, 480), max_slices=240,
                                                                     min_depth=240, padding="zero", text="report")),
        steps=100_000)
