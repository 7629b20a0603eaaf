"""Map the CT-CLIP authors' state dicts onto ours (the seed of importing their public checkpoint).

Their CTViT (``transformer_maskgit.CTViT``) names -> :class:`ctvlp.models.ctvit.CTViT` names; a CTCLIP
dict (``visual_transformer.*``, ``to_visual_latent.weight``, ``to_text_latent.weight``, ``temperature``)
maps onto a :class:`~ctvlp.models.vlp.VisionLanguageModel` (``vision.*``, ``image_proj.net.weight``,
``text_proj.net.weight``, ``logit_scale``; their temperature is the log of the scale, as ours). Dropped on
purpose: the video decoder (``to_pixels*``), the unused first-frame embedding, the attention's unused
``context_norm`` and empty ``null_kv``, the bias-free LayerNorms' zero ``beta`` buffers (checked to be
zero) and the codebook's ``initted`` flag / ``embed_avg``.
"""

from __future__ import annotations

import re

import torch
from torch import nn

__all__ = ["CTClipImportError", "map_ctclip_state", "load_ctclip_state"]

_IGNORED = re.compile(r"^(to_patch_emb_first_frame\.|to_pixels|dec_|discr\.|vgg\.|vq\._codebook\.(initted|embed_avg)$"
                      r"|.*\.context_norm\.|.*\.null_kv$)")
_RULES = [
    (r"^to_patch_emb\.1\.", "patch_norm_in."),
    (r"^to_patch_emb\.2\.", "patch_proj."),
    (r"^to_patch_emb\.3\.", "patch_norm_out."),
    (r"^spatial_rel_pos_bias\.net\.(\d)\.0\.", r"spatial_bias.net.\1."),
    (r"^spatial_rel_pos_bias\.net\.(\d)\.", r"spatial_bias.net.\1."),
    (r"^enc_(spatial|temporal)_transformer\.layers\.(\d+)\.0\.dsconv\.", r"\1.blocks.\2.peg.conv."),
    (r"^enc_(spatial|temporal)_transformer\.layers\.(\d+)\.1\.norm\.gamma$", r"\1.blocks.\2.attn.norm.weight"),
    (r"^enc_(spatial|temporal)_transformer\.layers\.(\d+)\.1\.", r"\1.blocks.\2.attn."),
    (r"^enc_(spatial|temporal)_transformer\.layers\.(\d+)\.3\.0\.", r"\1.blocks.\2.ff.norm."),
    (r"^enc_(spatial|temporal)_transformer\.layers\.(\d+)\.3\.1\.", r"\1.blocks.\2.ff.w_in."),
    (r"^enc_(spatial|temporal)_transformer\.layers\.(\d+)\.3\.4\.", r"\1.blocks.\2.ff.w_out."),
    (r"^enc_(spatial|temporal)_transformer\.norm_out\.gamma$", r"\1.norm_out.weight"),
    (r"^vq\._codebook\.embed$", "vq.embed"),
    (r"^vq\._codebook\.cluster_size$", "vq.cluster_size"),
]
_CLIP = {"to_visual_latent.weight": "image_proj.net.weight", "to_text_latent.weight": "text_proj.net.weight",
         "temperature": "logit_scale"}


class CTClipImportError(ValueError):
    """Their dict and our module disagree: names the missing and unexpected keys (or a bad value)."""


def _map_ctvit(key: str, value: torch.Tensor) -> tuple[str, torch.Tensor] | None:
    if key.endswith(".beta") and ("norm" in key):  # bias-free LayerNorm buffer
        if value.abs().max() != 0:
            raise CTClipImportError(f"{key}: their bias-free LayerNorm's beta must be zero, got nonzero values")
        return None
    if _IGNORED.match(key):
        return None
    for pattern, repl in _RULES:
        new, n = re.subn(pattern, repl, key)
        if n:
            if key.startswith("vq._codebook."):  # (1 codebook, K, d) / (1, K) -> (K, d) / (K,)
                value = value[0]
            return new, value
    return key, value  # unknown: reported as unexpected by load_ctclip_state


def map_ctclip_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Their CTViT or CTCLIP state dict -> ours (CTViT names, or VLP names with ``vision.`` for a CTCLIP dict)."""
    out = {}
    clip = any(k.startswith("visual_transformer.") for k in state)
    for key, value in state.items():
        if clip and key in _CLIP:
            out[_CLIP[key]] = value
            continue
        if clip and not key.startswith("visual_transformer."):
            out[key] = value  # text tower etc.: left for the caller
            continue
        mapped = _map_ctvit(key.removeprefix("visual_transformer."), value)
        if mapped is not None:
            out[("vision." if clip else "") + mapped[0]] = mapped[1]
    return out


def load_ctclip_state(module: nn.Module, state: dict[str, torch.Tensor], strict: bool = True) -> dict:
    """Map ``state`` and load it into ``module`` (our CTViT, or a VLP for a CTCLIP dict); with ``strict``,
    raise :class:`CTClipImportError` naming every missing and unexpected key. Returns the mapped dict."""
    mapped = map_ctclip_state(state)
    own = module.state_dict()
    missing = sorted(set(own) - set(mapped))
    unexpected = sorted(set(mapped) - set(own))
    if strict and (missing or unexpected):
        raise CTClipImportError(f"CT-CLIP state does not fit {type(module).__name__}: missing {missing}, "
                                f"unexpected {unexpected}")
    bad = [f"{k}: theirs {tuple(v.shape)}, ours {tuple(own[k].shape)}" for k, v in mapped.items()
           if k in own and v.shape != own[k].shape]
    if bad:
        raise CTClipImportError("CT-CLIP state has wrong shapes: " + "; ".join(bad))
    module.load_state_dict({k: v for k, v in mapped.items() if k in own}, strict=strict)
    return mapped
