"""The two-tower vision-language model: a 3D vision tower and a text tower projected into one space.

``forward`` returns a dict whose keys are the contrastive losses' keyword arguments
(``image_emb``, ``text_emb``, ``logit_scale``, ``logit_bias``), so ``loss_fn(**model(**batch))`` works
(open_clip's convention).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ctvlp.data.reports import sentence_findings, split_sentences
from ctvlp.losses.caption import next_token_targets
from ctvlp.models.decoder import DecoderConfig, ReportDecoder
from ctvlp.models.heads import AttentionPool, ProjectedAttentionPool, Projection, masked_max, multiscale_pool
from ctvlp.models.mae import MaeDecoder, MaeDecoderConfig, masked_autoencoder_step
from ctvlp.models.ctvit import CTViTConfig
from ctvlp.models.resnet3d import ResNet3dConfig
from ctvlp.models.text import TextTower, TextTowerConfig, check_available
from ctvlp.models.vit3d import ViT3dConfig, create_vision_tower
from ctvlp.models.voxel_head import (AnchorHead, VisualEnhancement, VoxelHead, VoxelHeadConfig, anchor_prompts,
                                     segmentation_outputs)

OUTPUT_GROUPS = ("pairs", "seg", "labels", "caption", "osl", "mae")
"""What ``VisionLanguageModel.forward`` can compute; a step asks for the groups its losses read."""


@dataclass
class ModelConfig:
    """A vision tower, a text tower and the heads that join them."""

    vision: ViT3dConfig | ResNet3dConfig | CTViTConfig = field(default_factory=ViT3dConfig)
    """The vision tower: a 3D ViT (``ctvlp.models.vit3d.vit_config`` for named sizes) or MONAI's 3D
    ResNet (``ctvlp.models.resnet3d.resnet_config``; ``--set 'model.vision={kind: resnet, depth: 10}'``)."""
    text: TextTowerConfig = field(default_factory=TextTowerConfig)
    """The text tower (default: the packaged all-MiniLM-L6-v2)."""
    embed_dim: int = 256
    """Dimension of the shared embedding space."""
    image_pool: Literal["mean", "max", "attention", "multiscale", "projected_attention"] = "mean"
    """How image tokens become one vector: masked mean, masked channel-wise max (small findings are not
    diluted by the volume's size), attention pooling, the global mean concatenated with the
    means of a 2 x 2 x 2 grid of cells (Uniferum; 9 x the width into the projection), or COLIPRI's head
    (``projected_attention``: tokens projected to ``embed_dim``, then multi-head attention with the mean
    as the query; it replaces the image projection, see ``heads.ProjectedAttentionPool``)."""
    image_pool_heads: int = 12
    """Attention heads of the ``projected_attention`` pool (COLIPRI: 12; must divide ``embed_dim``)."""
    projection: Literal["linear", "mlp", "mlp_ln", "mlp_bn"] = "linear"
    """Projection head of both towers (see :class:`~ctvlp.models.heads.Projection`)."""
    text_projection: Literal["linear", "mlp", "mlp_ln", "mlp_bn", "none"] | None = None
    """The text tower's own projection head when it differs from ``projection`` (None: the same); ``none``
    uses the pooled text features as they are (COLIPRI's package: CXR-BERT's 768 = ``embed_dim``), so the
    text width must equal ``embed_dim``."""
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

    seg: VoxelHeadConfig | None = None
    """SegVL's voxel head and mask-name anchors (``seg`` outputs: Tversky on masks, zero-shot
    segmentation); its ``patch`` is the ViT's (leave it None)."""
    visual_enhancement: bool = False
    """With ``seg``: z = z_img + lambda AvgPool(f_VE(V)) before the image embedding is normalised
    (lambda learnable, initialised at 0)."""
    label_prompts: bool = False
    """Uniferum's labels as prompts: label k is scored sigmoid(t_l cos(v, u_k) + b_l), u_k the text
    embedding of "<label>." (``labels`` outputs, trained by ``masked_bce``; own scale and bias)."""
    decoder: DecoderConfig | None = None
    """COLIPRI's report decoder cross-attending to the vision tokens (``caption`` outputs); its
    ``vocab_size`` and ``memory_width`` are taken from the text tokenizer and the vision tower."""
    mae: MaeDecoderConfig | None = None
    """MAE decoder for image-only steps (``mae`` outputs; the encoder sees only visible patches)."""
    mae_ratio: float = 0.75
    """Fraction of patches masked in an MAE step."""

    def __post_init__(self) -> None:
        if (self.seg is not None or self.mae is not None) and not isinstance(self.vision, ViT3dConfig):
            raise ValueError("model.seg and model.mae need a ViT vision tower (token grid of patches)")
        if self.seg is not None and self.seg.patch is not None and tuple(self.seg.patch) != tuple(self.vision.patch):
            raise ValueError(f"model.seg.patch {tuple(self.seg.patch)} must equal model.vision.patch "
                             f"{tuple(self.vision.patch)}")
        if self.visual_enhancement and self.seg is None:
            raise ValueError("model.visual_enhancement needs model.seg (the voxel head)")
        if not 0.0 < self.mae_ratio < 1.0:
            raise ValueError(f"mae_ratio must be in (0, 1), got {self.mae_ratio}")
        if self.sentence_match not in ("text", "findings"):
            raise ValueError(f"sentence_match must be 'text' or 'findings', got {self.sentence_match!r}")
        if self.embed_dim < 1:
            raise ValueError("embed_dim must be positive")
        pools = ("mean", "max", "attention", "multiscale", "projected_attention")
        if self.image_pool not in pools:
            raise ValueError(f"image_pool must be one of {', '.join(pools)}; got {self.image_pool!r}")
        if self.image_pool == "projected_attention" and self.embed_dim % self.image_pool_heads:
            raise ValueError(f"image_pool_heads {self.image_pool_heads} must divide embed_dim {self.embed_dim}")
        if self.image_pool == "projected_attention" and self.visual_enhancement:
            raise ValueError("model.visual_enhancement adds to the tower-width pooled vector; "
                             "image_pool='projected_attention' pools to embed_dim")
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

    def __init__(self, cfg: ModelConfig, prompts: dict[str, dict] | None = None, text: TextTowerConfig | None = None):
        """``prompts``: the prompt styles made for this model (a stored model's, :mod:`ctvlp.models.store`);
        ``text``: where and how the text tower is loaded when not as ``cfg.text`` says (a stored model's weights
        come from its file: ``pretrained`` off or its export folder, trust decided by the reader). ``self.cfg`` is
        ``cfg`` either way: the config as trained."""
        super().__init__()
        self.cfg = cfg
        text = cfg.text if text is None else text
        check_available(text)  # a hub text tower neither cached nor reachable fails before any allocation
        self.vision = create_vision_tower(cfg.vision)
        self.text = TextTower(text)
        if cfg.image_pool == "projected_attention":  # COLIPRI: the pool projects; nothing follows it
            self.image_pool = ProjectedAttentionPool(self.vision.width, cfg.embed_dim, cfg.image_pool_heads)
            self.image_proj = nn.Identity()
        else:
            self.image_pool = AttentionPool(self.vision.width) if cfg.image_pool == "attention" else None
            pooled_width = self.vision.width * (9 if cfg.image_pool == "multiscale" else 1)
            pooled_width = getattr(self.vision, "pooled_width", pooled_width)  # CTViT: CT-CLIP's flattened slab mean
            self.image_proj = Projection(pooled_width, cfg.embed_dim, cfg.projection)
        self.text_proj = Projection(self.text.width, cfg.embed_dim, cfg.text_projection or cfg.projection)
        self.logit_scale = nn.Parameter(torch.tensor(float(cfg.init_logit_scale)))
        self.logit_bias = nn.Parameter(torch.tensor(float(cfg.init_logit_bias)))
        if cfg.sentence_logits:
            self.sentence_logit_scale = nn.Parameter(torch.tensor(float(cfg.init_logit_scale)))
            self.sentence_logit_bias = nn.Parameter(torch.tensor(float(cfg.init_logit_bias)))
        self._sentence_features: dict[str, torch.Tensor] = {}  # memo of the frozen tower, sentence -> (width,)
        # prompt styles made for this model (name -> style dict, ctvlp.data.prompts.prompt_set): the style
        # mined from its training reports; checkpoints and exports carry it
        self.prompts: dict[str, dict] = dict(prompts or {})
        if cfg.seg is not None:
            self.seg = nn.ModuleDict({"voxel": VoxelHead.for_tower(cfg.seg, self.vision),
                                      "anchor": AnchorHead(cfg.embed_dim, cfg.seg.embed_dim)})
            if cfg.visual_enhancement:
                self.seg["enhance"] = VisualEnhancement(cfg.seg.embed_dim, self.vision.width)
        if cfg.label_prompts:
            self.label_logit_scale = nn.Parameter(torch.tensor(float(cfg.init_logit_scale)))
            self.label_logit_bias = nn.Parameter(torch.tensor(0.0))
        if cfg.decoder is not None:
            vocab = len(self.text.tokenizer)
            self.decoder = ReportDecoder(dataclasses.replace(cfg.decoder, vocab_size=vocab,
                                                             memory_width=self.vision.width))
        if cfg.mae is not None:
            self.mae_decoder = MaeDecoder.for_tower(cfg.mae, self.vision)

    @property
    def text_frozen(self) -> bool:
        return not any(p.requires_grad for p in self.text.parameters())

    def train(self, mode: bool = True):
        super().train(mode)
        if self.text_frozen:
            self.text.eval()  # a frozen tower is a fixed function: no dropout
        return self

    @property
    def enhancing(self) -> bool:
        """Visual enhancement changes the image embedding (lambda trains or is not 0)."""
        enhance = self.seg["enhance"] if self.cfg.visual_enhancement else None
        return enhance is not None and (enhance.scale.requires_grad or bool(enhance.scale != 0))

    def image_features(self, image: torch.Tensor, slice_mask: torch.Tensor | None = None,
                       voxels: bool = False) -> dict:
        """Vision tower output (tokens, token_mask, grid) plus ``pooled`` (B, width), visually enhanced
        when configured, and with ``voxels`` (or enhancement) the voxel embeddings ``voxel_emb``
        (B, E, D, H, W) on the image's grid."""
        out = self.vision(image, slice_mask=slice_mask)
        if self.image_pool is not None:
            out["pooled"] = self.image_pool(out["tokens"], out["token_mask"])
        elif self.cfg.image_pool == "max":
            out["pooled"] = masked_max(out["tokens"], out["token_mask"])
        elif self.cfg.image_pool == "multiscale":
            out["pooled"] = multiscale_pool(out["tokens"], out["token_mask"], out["grid"])
        if voxels or self.enhancing:
            out["voxel_emb"] = self.seg["voxel"](out["tokens"], out["grid"], image.shape[2:])
        if self.enhancing:
            out["pooled"] = self.seg["enhance"](out["pooled"], out["voxel_emb"], slice_mask)
        return out

    def encode_image(self, image: torch.Tensor, slice_mask: torch.Tensor | None = None,
                     normalize: bool = True) -> torch.Tensor:
        """image (B, C, D, H, W) windowed to [-1, 1] -> (B, embed_dim)."""
        emb = self.image_proj(self.image_features(image, slice_mask)["pooled"])
        return F.normalize(emb, dim=-1) if normalize else emb

    def encode_anchors(self, names: list[str]) -> torch.Tensor:
        """SegVL's mask-name anchors M = f_text(text embedding of "This is <name>.") (K, E)."""
        return self.seg["anchor"](self.encode_texts(anchor_prompts(names)))

    def label_logits(self, image_emb: torch.Tensor, label_names: list[str]) -> torch.Tensor:
        """Uniferum's label logits t_l cos(v, u_k) + b_l (B, K), u_k the embedding of "<label>."."""
        prompts = self.encode_texts([f"{name}." for name in label_names])  # (K, E)
        scale = self.label_logit_scale.exp().clamp(max=self.cfg.max_logit_scale)
        return scale * image_emb @ prompts.T + self.label_logit_bias

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
            return self.encode_sentences([split_sentences(t) for t in texts], normalize)
        tokens = self.text.tokenize(texts)
        device = self.logit_scale.device
        return self.encode_text(tokens["input_ids"].to(device), tokens["attention_mask"].to(device), normalize)

    def scale(self) -> torch.Tensor:
        """t = exp(log t), clamped at ``max_logit_scale``."""
        return self.logit_scale.exp().clamp(max=self.cfg.max_logit_scale)

    def forward(self, image: torch.Tensor, slice_mask: torch.Tensor | None = None,
                input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                sentences: list[list[str]] | None = None, masks: torch.Tensor | None = None,
                mask_available: torch.Tensor | None = None, mask_names: list[str] | None = None,
                label_names: list[str] | None = None, osl: dict | None = None,
                outputs: tuple[str, ...] = ("pairs",), **_) -> dict[str, torch.Tensor]:
        """image (B, C, D, H, W) and what the requested ``outputs`` groups read -> the losses' keyword
        arguments:

        - ``pairs`` (token ids, or each sample's sentences): ``image_emb``, ``text_emb``, ``logit_scale``,
          ``logit_bias``, the vision ``tokens``/``token_mask`` and ``report_emb`` (the text tower's pooled
          features, detached; SWCA), sentence-level outputs with ``text_input="sentences"``;
        - ``seg`` (``masks`` (B, M, D, H, W), ``mask_available`` (B, M), ``mask_names``): ``seg_probs``,
          ``seg_targets``, ``seg_available``;
        - ``labels`` (``label_names``): ``label_logits`` (B, K);
        - ``caption`` (token ids of the report): ``caption_logits`` (B, L, V), ``caption_targets`` (B, L);
        - ``osl`` (``osl``: a ``build_osl_pairs`` result as a dict): ``osl_pos_emb``/``osl_neg_emb``
          (B, K, E), ``osl_is_true``, ``osl_mask`` (B, K);
        - ``mae`` alone: ``mae_pred``, ``mae_target``, ``mae_mask`` (the encoder sees visible patches only).
        """
        unknown = set(outputs) - set(OUTPUT_GROUPS)
        if unknown:
            raise ValueError(f"unknown output groups {sorted(unknown)}; groups: {', '.join(OUTPUT_GROUPS)}")
        if "mae" in outputs:
            if len(outputs) > 1:
                raise ValueError("an MAE step computes only the 'mae' outputs (the encoder sees visible patches)")
            return masked_autoencoder_step(self.vision, self.mae_decoder, image, self.cfg.mae_ratio,
                                           slice_mask=slice_mask)
        vision = self.image_features(image, slice_mask, voxels="seg" in outputs)
        image_emb = F.normalize(self.image_proj(vision["pooled"]), dim=-1)
        out = {"image_emb": image_emb, "tokens": vision["tokens"], "token_mask": vision["token_mask"],
               "logit_scale": self.scale(), "logit_bias": self.logit_bias}
        if "pairs" in outputs:
            out.update(self._pair_outputs(input_ids, attention_mask, sentences))
        if "seg" in outputs:
            out.update(segmentation_outputs(vision["voxel_emb"], self.encode_anchors(mask_names), masks,
                                            mask_available, slice_mask))
        if "labels" in outputs:
            out["label_logits"] = self.label_logits(image_emb, label_names)
        if "caption" in outputs:
            out["caption_logits"] = self.decoder(input_ids, vision["tokens"], vision["token_mask"], attention_mask)
            out["caption_targets"] = next_token_targets(input_ids, attention_mask)
        if "osl" in outputs:
            out.update(self._osl_outputs(osl))
        return out

    def _pair_outputs(self, input_ids: torch.Tensor | None, attention_mask: torch.Tensor | None,
                      sentences: list[list[str]] | None) -> dict[str, torch.Tensor]:
        if self.cfg.text_input == "sentences":
            out = self._sentence_outputs(sentences)
        else:
            features = self.text(input_ids, attention_mask)  # (B, width)
            out = {"text_emb": F.normalize(self.text_proj(features), dim=-1), "report_emb": features.detach()}
        if self.cfg.sentence_logits:
            out["sentence_logit_scale"] = self.sentence_logit_scale.exp().clamp(max=self.cfg.max_logit_scale)
            out["sentence_logit_bias"] = self.sentence_logit_bias
        return out

    def _osl_outputs(self, osl: dict) -> dict[str, torch.Tensor]:
        """Embeds the valid pairs' sentences (invalid slots get zero vectors and are masked).

        Each distinct sentence is encoded once per batch: a batch's pairs repeat (a false pair's s+ is
        another patient's finding, and the same findings recur across patients), so on the synthetic
        cohort 442 valid slots of a batch of 32 (K = 8) hold ~104 distinct sentences. The distinct
        sentences go through the text tower shortest first in chunks of 16, so a chunk pads
        to its own longest sentence, not the batch's. The embeddings equal encoding every slot (up to
        float rounding; in train mode a repeated sentence shares one dropout draw)."""
        valid = torch.tensor(osl["valid"], dtype=torch.bool, device=self.logit_scale.device)  # (B, K)
        b, k = valid.shape
        texts = [t for side in ("pos_texts", "neg_texts") for row in osl[side] for t in row]  # 2 B K
        flat = torch.cat((valid.flatten(), valid.flatten()))
        emb = torch.zeros(2 * b * k, self.cfg.embed_dim, device=valid.device)
        if flat.any():
            kept = [t for t, v in zip(texts, flat.tolist()) if v]
            distinct = sorted(set(kept), key=lambda t: (len(t), t))  # by length: chunks pad little
            chunk = 16
            encoded = torch.cat([self.encode_texts(distinct[i:i + chunk]) for i in range(0, len(distinct), chunk)])
            row = {t: n for n, t in enumerate(distinct)}
            index = torch.tensor([row[t] for t in kept], device=valid.device)
            emb = emb.index_put((flat.nonzero()[:, 0],), encoded[index].to(emb.dtype))
        pos, neg = emb.view(2, b, k, -1)
        return {"osl_pos_emb": pos, "osl_neg_emb": neg, "osl_mask": valid,
                "osl_is_true": torch.tensor(osl["is_true"], dtype=torch.bool, device=valid.device)}
