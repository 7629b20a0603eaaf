"""The two-tower vision-language model: a 3D vision tower and a text tower projected into one space.

``forward`` takes a training batch's tensors (the collate made every text-derived one, see
``ctvlp.data.text``) and returns a dict whose keys are the losses' keyword arguments (``image_emb``,
``text_emb``, ``logit_scale``, ``logit_bias``, ...), so ``loss_fn(**model(**batch))`` works (open_clip's
convention); it parses no report. ``encode_texts`` is the inference API for plain strings.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ctvlp.data.text import OSL_CHUNK, OSL_INPUTS, SENTENCE_INPUTS, sentence_tensors, text_sentences
from ctvlp.models.decoder import DecoderConfig, ReportDecoder, next_token_targets
from ctvlp.models.heads import AttentionPool, Projection, masked_max, multiscale_pool
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
    as the query; it replaces the image projection, see ``heads.AttentionPool``)."""
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
            self.image_pool = AttentionPool(self.vision.width, cfg.image_pool_heads, dim=cfg.embed_dim)
            self.image_proj = nn.Identity()
        else:
            attention = cfg.image_pool == "attention"
            self.image_pool = AttentionPool(self.vision.width, norm=True, init="linear") if attention else None
            pooled_width = self.vision.width * (9 if cfg.image_pool == "multiscale" else 1)
            pooled_width = getattr(self.vision, "pooled_width", pooled_width)  # CTViT: CT-CLIP's flattened slab mean
            self.image_proj = Projection(pooled_width, cfg.embed_dim, cfg.projection)
        self.text_proj = Projection(self.text.width, cfg.embed_dim, cfg.text_projection or cfg.projection)
        self.logit_scale = nn.Parameter(torch.tensor(float(cfg.init_logit_scale)))
        self.logit_bias = nn.Parameter(torch.tensor(float(cfg.init_logit_bias)))
        if cfg.sentence_logits:
            self.sentence_logit_scale = nn.Parameter(torch.tensor(float(cfg.init_logit_scale)))
            self.sentence_logit_bias = nn.Parameter(torch.tensor(float(cfg.init_logit_bias)))
        self._sentence_features: dict[int, torch.Tensor] = {}  # memo of the frozen tower, sentence id -> (width,)
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
        prompts = self._encode_prompts([f"{name}." for name in label_names])  # (K, E)
        scale = self.label_logit_scale.exp().clamp(max=self.cfg.max_logit_scale)
        return scale * image_emb @ prompts.T + self.label_logit_bias

    def _encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """Name prompts ("This is <name>.", "<label>.") -> (K, E), as ``encode_texts`` embeds them but
        without the report parser (they run inside ``forward``): with ``text_input="sentences"`` each
        prompt is one sentence."""
        if self.cfg.text_input != "sentences":
            return self.encode_texts(prompts)
        tensors = sentence_tensors([[p] for p in prompts], self.text.tokenizer, self.text.cfg.max_length)
        return self._sentence_outputs(**tensors)["text_emb"]

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    normalize: bool = True) -> torch.Tensor:
        """Token ids (B, L) and attention mask (B, L) -> (B, embed_dim)."""
        emb = self.text_proj(self.text(input_ids, attention_mask))
        return F.normalize(emb, dim=-1) if normalize else emb

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return self.text.tokenize(texts)

    def _tower(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
               ids: torch.Tensor | None = None) -> torch.Tensor:
        """Tokenised sentences (T, L) -> (T, width) text-tower features; with a frozen tower and the
        sentences' ``ids`` (T,) (``data.text.sentence_id``), through the memo: each sentence not seen
        before is encoded once per process, in chunks of 256 trimmed to their longest sentence."""
        device = self.logit_scale.device
        if not self.text_frozen or ids is None:
            return self.text(input_ids.to(device), attention_mask.to(device))
        keys = ids.tolist()
        missing = [n for n, key in enumerate(keys) if key not in self._sentence_features]
        with torch.no_grad():
            for start in range(0, len(missing), 256):
                rows = missing[start:start + 256]
                chunk_ids, chunk_mask = _trimmed(input_ids[rows], attention_mask[rows])  # (C, L')
                feats = self.text(chunk_ids.to(device), chunk_mask.to(device)).float()  # (C, width)
                self._sentence_features.update(zip((keys[n] for n in rows), feats))
        return torch.stack([self._sentence_features[key] for key in keys])

    def encode_sentences(self, sentences: list[list[str]], normalize: bool = True) -> torch.Tensor:
        """One text per sample given as its sentences -> (B, embed_dim): the mean of the projected
        sentence features (an empty list gets the projection of the empty string)."""
        tensors = sentence_tensors(sentences, self.text.tokenizer, self.text.cfg.max_length, self.cfg.sentence_match)
        return self._sentence_outputs(**tensors, normalize=normalize)["text_emb"]

    def _sentence_outputs(self, sentence_input_ids: torch.Tensor, sentence_attention_mask: torch.Tensor,
                          sentence_ids: torch.Tensor, sentence_keys: torch.Tensor, sentence_owner: torch.Tensor,
                          sentence_index: torch.Tensor, sentence_targets: torch.Tensor,
                          normalize: bool = True) -> dict[str, torch.Tensor]:
        """The batch's N distinct sentences, tokenised by the collate (``data.text.sentence_tensors``),
        -> each sample's text embedding (the mean of its projected sentences) ``text_emb`` (B, E), the
        sentences' ``sentence_emb`` (N, E), ``report_emb`` (B, width): the mean of the sample's
        text-tower sentence features, detached (SWCA's knowledge affinity), and the collate's
        ``sentence_targets`` (B, N), ``sentence_ids`` and ``sentence_keys`` (N,) for the sentence loss."""
        features = self._tower(sentence_input_ids, sentence_attention_mask, sentence_ids)  # (N, width)
        proj = self.text_proj(features)  # (N, E)
        device = proj.device
        owner, index = sentence_owner.to(device), sentence_index.to(device)  # (T,), (T,)
        b = sentence_targets.shape[0]
        counts = torch.bincount(owner, minlength=b).to(proj.dtype)[:, None]  # (B, 1)
        emb = proj.new_zeros(b, proj.shape[1]).index_add_(0, owner, proj[index]) / counts  # (B, E)
        report = features.new_zeros(b, features.shape[1]).index_add_(0, owner, features[index].detach())  # (B, width)
        if normalize:
            emb, proj = F.normalize(emb, dim=-1), F.normalize(proj, dim=-1)
        return {"text_emb": emb, "sentence_emb": proj, "sentence_targets": sentence_targets.to(device),
                "sentence_ids": sentence_ids.to(device), "sentence_keys": sentence_keys.to(device),
                "report_emb": report / counts}

    def encode_texts(self, texts: list[str], normalize: bool = True) -> torch.Tensor:
        """Plain strings -> (B, embed_dim), split into sentences when ``text_input="sentences"``
        (the inference API: a training step hands ``forward`` tensors instead)."""
        if self.cfg.text_input == "sentences":
            return self.encode_sentences(text_sentences(texts), normalize)
        tokens = self.text.tokenize(texts)
        device = self.logit_scale.device
        return self.encode_text(tokens["input_ids"].to(device), tokens["attention_mask"].to(device), normalize)

    def scale(self) -> torch.Tensor:
        """t = exp(log t), clamped at ``max_logit_scale``."""
        return self.logit_scale.exp().clamp(max=self.cfg.max_logit_scale)

    def forward(self, image: torch.Tensor, slice_mask: torch.Tensor | None = None,
                input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                masks: torch.Tensor | None = None, mask_available: torch.Tensor | None = None,
                mask_names: list[str] | None = None, label_names: list[str] | None = None,
                outputs: tuple[str, ...] = ("pairs",), **text: torch.Tensor) -> dict[str, torch.Tensor]:
        """image (B, C, D, H, W) and what the requested ``outputs`` groups read -> the losses' keyword
        arguments. ``text``: the collate's ``sentence_*`` and ``osl_*`` tensors (``ctvlp.data.text``;
        other keys are ignored). ``mask_names`` and ``label_names`` name the prompts of the anchors and
        label logits, which are encoded here (the tower's tokenizer, no report parsing).

        - ``pairs`` (token ids, or with ``text_input="sentences"`` the ``sentence_*`` tensors):
          ``image_emb``, ``text_emb``, ``logit_scale``, ``logit_bias``, the vision ``tokens``/``token_mask``
          and ``report_emb`` (the text tower's pooled features, detached; SWCA), sentence-level outputs
          with ``text_input="sentences"``;
        - ``seg`` (``masks`` (B, M, D, H, W), ``mask_available`` (B, M), ``mask_names``): ``seg_probs``,
          ``seg_targets``, ``seg_available``;
        - ``labels`` (``label_names``): ``label_logits`` (B, K);
        - ``caption`` (token ids of the report): ``caption_logits`` (B, L, V), ``caption_targets`` (B, L);
        - ``osl`` (the ``osl_*`` tensors of ``data.text.osl_tensors``): ``osl_pos_emb``/``osl_neg_emb``
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
            out.update(self._pair_outputs(input_ids, attention_mask, text))
        if "seg" in outputs:
            anchors = self.seg["anchor"](self._encode_prompts(anchor_prompts(mask_names)))  # encode_anchors, unparsed
            out.update(segmentation_outputs(vision["voxel_emb"], anchors, masks, mask_available, slice_mask))
        if "labels" in outputs:
            out["label_logits"] = self.label_logits(image_emb, label_names)
        if "caption" in outputs:
            out["caption_logits"] = self.decoder(input_ids, vision["tokens"], vision["token_mask"], attention_mask)
            out["caption_targets"] = next_token_targets(input_ids, attention_mask)
        if "osl" in outputs:
            out.update(self._osl_outputs(**_group(text, OSL_INPUTS, "osl")))
        return out

    def _pair_outputs(self, input_ids: torch.Tensor | None, attention_mask: torch.Tensor | None,
                      text: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.cfg.text_input == "sentences":
            out = self._sentence_outputs(**_group(text, SENTENCE_INPUTS, "pairs"))
        else:
            features = self.text(input_ids, attention_mask)  # (B, width)
            out = {"text_emb": F.normalize(self.text_proj(features), dim=-1), "report_emb": features.detach()}
        if self.cfg.sentence_logits:
            out["sentence_logit_scale"] = self.sentence_logit_scale.exp().clamp(max=self.cfg.max_logit_scale)
            out["sentence_logit_bias"] = self.sentence_logit_bias
        return out

    def _osl_outputs(self, osl_input_ids: torch.Tensor, osl_attention_mask: torch.Tensor, osl_ids: torch.Tensor,
                     osl_index: torch.Tensor, osl_mask: torch.Tensor, osl_is_true: torch.Tensor
                     ) -> dict[str, torch.Tensor]:
        """Embeds the valid pairs' sentences (invalid slots get zero vectors and are masked); the
        tensors are ``data.text.osl_tensors``' (the collate's).

        Each distinct sentence is encoded once per batch: a batch's pairs repeat (a false pair's s+ is
        another patient's finding, and the same findings recur across patients), so on the synthetic
        cohort 442 valid slots of a batch of 32 (K = 8) hold ~104 distinct sentences. The distinct
        sentences (U, shortest first) go through the text tower in chunks of ``OSL_CHUNK`` = 16, each
        trimmed to its own longest sentence, not the batch's. The embeddings equal encoding every slot
        (up to float rounding; in train mode a repeated sentence shares one dropout draw)."""
        device = self.logit_scale.device
        valid = osl_mask.to(device)  # (B, K)
        b, k = valid.shape
        flat = torch.cat((valid.flatten(), valid.flatten()))  # (2 B K,): s+ slots, then s- slots
        emb = torch.zeros(2 * b * k, self.cfg.embed_dim, device=device)
        if flat.any():
            encoded = torch.cat([self._encode_rows(osl_input_ids[i:i + OSL_CHUNK], osl_attention_mask[i:i + OSL_CHUNK],
                                                   osl_ids[i:i + OSL_CHUNK])
                                 for i in range(0, osl_input_ids.shape[0], OSL_CHUNK)])  # (U, E)
            rows = osl_index.to(device).flatten()[flat]  # (valid slots,)
            emb = emb.index_put((flat.nonzero()[:, 0],), encoded[rows].to(emb.dtype))
        pos, neg = emb.view(2, b, k, -1)
        return {"osl_pos_emb": pos, "osl_neg_emb": neg, "osl_mask": valid, "osl_is_true": osl_is_true.to(device)}

    def _encode_rows(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Tokenised texts (T, L), each one sentence, trimmed to their longest -> normalised (T, E) as
        ``encode_texts`` gives them: the whole text's embedding, or with ``text_input="sentences"`` the
        sentence's projected features (through the frozen tower's memo)."""
        input_ids, attention_mask = _trimmed(input_ids, attention_mask)
        if self.cfg.text_input == "sentences":
            return F.normalize(self.text_proj(self._tower(input_ids, attention_mask, ids)), dim=-1)
        device = self.logit_scale.device
        return self.encode_text(input_ids.to(device), attention_mask.to(device))


def _group(text: dict[str, torch.Tensor], keys: tuple[str, ...], group: str) -> dict[str, torch.Tensor]:
    """The collate's tensors ``keys`` of one output group, or a ValueError naming the missing ones."""
    missing = [k for k in keys if k not in text]
    if missing:
        raise ValueError(f"the {group!r} outputs need the collate's text tensors {missing} (ctvlp.data.text)")
    return {k: text[k] for k in keys}


def _trimmed(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded tokens (T, L) cut to their longest row (T, L'): as if tokenised on their own."""
    length = max(1, int(attention_mask.sum(1).max())) if attention_mask.numel() else 1
    return input_ids[:, :length], attention_mask[:, :length]
