"""The two-tower vision-language model: a 3D vision tower and a text tower projected into one space.

``forward`` returns a dict whose keys are the contrastive losses' keyword arguments
(``image_emb``, ``text_emb``, ``logit_scale``, ``logit_bias``), so ``loss_fn(**model(**batch))`` works
(open_clip's convention).
"""

from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ctvlp.data.reports import sentence_findings
from ctvlp.models.heads import AttentionPool, Projection, masked_max
from ctvlp.models.resnet3d import ResNet3dConfig
from ctvlp.models.text import TextTower, TextTowerConfig
from ctvlp.models.vit3d import ViT3dConfig, create_vision_tower


@dataclass
class ModelConfig:
    """A vision tower, a text tower and the heads that join them."""

    vision: ViT3dConfig | ResNet3dConfig = field(default_factory=ViT3dConfig)
    """The vision tower: a 3D ViT (``ctvlp.models.vit3d.vit_config`` for named sizes) or MONAI's 3D
    ResNet (``ctvlp.models.resnet3d.resnet_config``; ``--set 'model.vision={kind: resnet, depth: 10}'``)."""
    text: TextTowerConfig = field(default_factory=TextTowerConfig)
    """The text tower (default: the packaged all-MiniLM-L6-v2)."""
    embed_dim: int = 256
    """Dimension of the shared embedding space."""
    image_pool: Literal["mean", "max", "attention"] = "mean"
    """How image tokens become one vector: masked mean, masked channel-wise max (small findings are not
    diluted by the volume's size) or attention pooling (COLIPRI)."""
    projection: Literal["linear", "mlp", "mlp_bn"] = "linear"
    """Projection head of both towers (see :class:`~ctvlp.models.heads.Projection`)."""
    init_logit_scale: float = math.log(10.0)
    """Initial log t; the losses get exp(log t) (SigLIP: log 10; CLIP: log(1/0.07))."""
    init_logit_bias: float = -10.0
    """Initial b of the sigmoid loss (SigLIP: -10); the softmax loss ignores it."""
    max_logit_scale: float = 100.0
    """t is clamped at this value (open_clip)."""
    text_input: Literal["text", "sentences"] = "text"
    """``text``: a sample's whole text goes through the text tower at once. ``sentences``: each sentence
    is encoded alone, projected, and the projections are averaged; with a frozen text tower
    (``text.freeze="all"``) each distinct sentence is encoded once per process and memoised, which makes
    the text side nearly free on a CPU (a report vocabulary repeats its sentences)."""

    sentence_match: Literal["text", "findings"] = "text"
    """Which of the batch's sentences are positives of an image in the sentence-level loss: those with
    the same text as one of its own, or (``findings``) also those stating the same findings with the
    same polarity per the rule-based parser ("Nodule of 7 mm in the left lower lobe." matches "A 12 mm
    solid nodule is seen in the right lung upper lobe."), so that templated sentences differing in a size
    or side are not taken for negatives."""

    sentence_logits: bool = False
    """Give the sentence-level loss its own logit scale and bias (``sentence_logit_scale/_bias``, same
    initial values) instead of sharing the sample-level loss's: the two see different positive rates."""

    def __post_init__(self) -> None:
        if self.sentence_match not in ("text", "findings"):
            raise ValueError(f"sentence_match must be 'text' or 'findings', got {self.sentence_match!r}")
        if self.embed_dim < 1:
            raise ValueError("embed_dim must be positive")
        if self.image_pool not in ("mean", "max", "attention"):
            raise ValueError(f"image_pool must be 'mean', 'max' or 'attention', got {self.image_pool!r}")
        if self.text_input not in ("text", "sentences"):
            raise ValueError(f"text_input must be 'text' or 'sentences', got {self.text_input!r}")
        if self.max_logit_scale <= 0 or math.exp(self.init_logit_scale) > self.max_logit_scale:
            raise ValueError("need 0 < exp(init_logit_scale) <= max_logit_scale")


def sentence_id(text: str) -> int:
    """A stable 62-bit hash of a sentence (the same on every process and run)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 2


@functools.lru_cache(maxsize=65536)
def sentence_key(text: str, match: str) -> int:
    """Id of what a sentence counts as in the sentence-level loss: its text, or (``match="findings"``)
    the findings it states when it states any."""
    findings = sentence_findings(text) if match == "findings" else ()
    return sentence_id(repr(findings) if findings else text)


class VisionLanguageModel(nn.Module):
    """3D CT vision tower + text tower + projections + learnable logit scale and bias."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.vision = create_vision_tower(cfg.vision)
        self.text = TextTower(cfg.text)
        self.image_pool = AttentionPool(self.vision.width) if cfg.image_pool == "attention" else None
        self.image_proj = Projection(self.vision.width, cfg.embed_dim, cfg.projection)
        self.text_proj = Projection(self.text.width, cfg.embed_dim, cfg.projection)
        self.logit_scale = nn.Parameter(torch.tensor(float(cfg.init_logit_scale)))
        self.logit_bias = nn.Parameter(torch.tensor(float(cfg.init_logit_bias)))
        if cfg.sentence_logits:
            self.sentence_logit_scale = nn.Parameter(torch.tensor(float(cfg.init_logit_scale)))
            self.sentence_logit_bias = nn.Parameter(torch.tensor(float(cfg.init_logit_bias)))
        self._sentence_features: dict[str, torch.Tensor] = {}  # memo of the frozen tower, sentence -> (width,)

    @property
    def text_frozen(self) -> bool:
        return not any(p.requires_grad for p in self.text.parameters())

    def train(self, mode: bool = True):
        super().train(mode)
        if self.text_frozen:
            self.text.eval()  # a frozen tower is a fixed function: no dropout
        return self

    def image_features(self, image: torch.Tensor, slice_mask: torch.Tensor | None = None) -> dict:
        """Vision tower output (tokens, token_mask, grid) plus ``pooled`` (B, width)."""
        out = self.vision(image, slice_mask=slice_mask)
        if self.image_pool is not None:
            out["pooled"] = self.image_pool(out["tokens"], out["token_mask"])
        elif self.cfg.image_pool == "max":
            out["pooled"] = masked_max(out["tokens"], out["token_mask"])
        return out

    def encode_image(self, image: torch.Tensor, slice_mask: torch.Tensor | None = None,
                     normalize: bool = True) -> torch.Tensor:
        """image (B, 1, D, H, W) windowed to [-1, 1] -> (B, embed_dim)."""
        emb = self.image_proj(self.image_features(image, slice_mask)["pooled"])
        return F.normalize(emb, dim=-1) if normalize else emb

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    normalize: bool = True) -> torch.Tensor:
        """Token ids (B, L) and attention mask (B, L) -> (B, embed_dim)."""
        emb = self.text_proj(self.text(input_ids, attention_mask))
        return F.normalize(emb, dim=-1) if normalize else emb

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return self.text.tokenize(texts)

    def _tower(self, texts: list[str]) -> torch.Tensor:
        """(T, width) text-tower features, through the memo when the tower is frozen."""
        device = self.logit_scale.device
        if not self.text_frozen:
            tokens = self.text.tokenize(texts)
            return self.text(tokens["input_ids"].to(device), tokens["attention_mask"].to(device))
        missing = sorted({t for t in texts if t not in self._sentence_features})
        with torch.no_grad():
            for start in range(0, len(missing), 256):
                chunk = missing[start:start + 256]
                tokens = self.text.tokenize(chunk)
                feats = self.text(tokens["input_ids"].to(device), tokens["attention_mask"].to(device)).float()
                self._sentence_features.update(zip(chunk, feats))
        return torch.stack([self._sentence_features[t] for t in texts])

    def encode_sentences(self, sentences: list[list[str]], normalize: bool = True) -> torch.Tensor:
        """One text per sample given as its sentences -> (B, embed_dim): the mean of the projected
        sentence features (an empty list gets the projection of the empty string)."""
        return self._sentence_outputs(sentences, normalize)["text_emb"]

    def _sentence_outputs(self, sentences: list[list[str]], normalize: bool = True) -> dict[str, torch.Tensor]:
        """Each sample's text embedding (the mean of its projected sentences) and the batch's distinct
        sentences: ``text_emb`` (B, E), ``sentence_emb`` (N, E), ``sentence_targets`` (B, N) (1 where
        the sentence matches one of the sample's, see ``ModelConfig.sentence_match``), ``sentence_ids``
        (N,) (a stable hash of each sentence), ``sentence_keys`` (N,) (the hash of what it matches by)
        and ``report_emb`` (B, width): the mean of the sample's text-tower sentence features, detached
        (SWCA's knowledge affinity)."""
        groups = [s if s else [""] for s in sentences]
        distinct = sorted({t for g in groups for t in g})
        column = {t: n for n, t in enumerate(distinct)}
        features = self._tower(distinct)  # (N, width)
        proj = self.text_proj(features)  # (N, E)
        device = proj.device
        keys = torch.tensor([sentence_key(t, self.cfg.sentence_match) for t in distinct], device=device)  # (N,)
        own = [torch.tensor([column[t] for t in set(g)], device=device) for g in groups]
        targets = torch.stack([torch.isin(keys, keys[cols]) for cols in own]).float()  # (B, N)
        flat = torch.tensor([column[t] for g in groups for t in g], device=device)  # (T,)
        owner = torch.repeat_interleave(torch.arange(len(groups), device=device),
                                        torch.tensor([len(g) for g in groups], device=device))  # (T,)
        counts = torch.tensor([len(g) for g in groups], device=device, dtype=proj.dtype)[:, None]  # (B, 1)
        emb = proj.new_zeros(len(groups), proj.shape[1]).index_add_(0, owner, proj[flat]) / counts  # (B, E)
        report = features.new_zeros(len(groups), features.shape[1]).index_add_(0, owner, features[flat].detach())
        ids = torch.tensor([sentence_id(t) for t in distinct], device=device, dtype=torch.int64)
        if normalize:
            emb, proj = F.normalize(emb, dim=-1), F.normalize(proj, dim=-1)
        return {"text_emb": emb, "sentence_emb": proj, "sentence_targets": targets, "sentence_ids": ids,
                "sentence_keys": keys, "report_emb": report / counts}

    def encode_texts(self, texts: list[str], normalize: bool = True) -> torch.Tensor:
        """Plain strings -> (B, embed_dim), split into sentences when ``text_input="sentences"``."""
        if self.cfg.text_input == "sentences":
            from ctvlp.data.reports import split_sentences

            return self.encode_sentences([split_sentences(t) for t in texts], normalize)
        tokens = self.text.tokenize(texts)
        device = self.logit_scale.device
        return self.encode_text(tokens["input_ids"].to(device), tokens["attention_mask"].to(device), normalize)

    def scale(self) -> torch.Tensor:
        """t = exp(log t), clamped at ``max_logit_scale``."""
        return self.logit_scale.exp().clamp(max=self.cfg.max_logit_scale)

    def forward(self, image: torch.Tensor, slice_mask: torch.Tensor | None = None,
                input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                sentences: list[list[str]] | None = None, **_) -> dict[str, torch.Tensor]:
        """image (B, 1, D, H, W) and either token ids (``text_input="text"``) or each sample's sentences.
        Besides the embeddings, the output carries the vision tokens (``tokens`` (B, N, C), ``token_mask``)
        and ``report_emb`` (the text tower's pooled features, detached) for losses that use them (SWCA)."""
        if self.cfg.text_input == "sentences":
            text = self._sentence_outputs(sentences)
        else:
            features = self.text(input_ids, attention_mask)  # (B, width)
            text = {"text_emb": F.normalize(self.text_proj(features), dim=-1), "report_emb": features.detach()}
        vision = self.image_features(image, slice_mask)
        out = {"image_emb": F.normalize(self.image_proj(vision["pooled"]), dim=-1), **text,
               "tokens": vision["tokens"], "token_mask": vision["token_mask"],
               "logit_scale": self.scale(), "logit_bias": self.logit_bias}
        if self.cfg.sentence_logits:
            out["sentence_logit_scale"] = self.sentence_logit_scale.exp().clamp(max=self.cfg.max_logit_scale)
            out["sentence_logit_bias"] = self.sentence_logit_bias
        return out

