"""SegVL's voxel head, mask-name anchors and visual enhancement (Hu et al. 2025, "Segmentation Helps
Understanding: Mask-Infused Vision-Language Pre-training for 3D Medical Images"); Uniferum's
"Segment <structure>" objective shares the same head.

Voxel embeddings (SegVL Eq. 3). A light per-token MLP f_seg maps each token x_n (C,) of the z-major
(gz, gy, gx) grid to the P = pz * py * px voxels of its patch, E values each:

    X^_n = f_seg(x_n) = W2 GELU(W1 x_n + b1) + b2        in R^(P * E), ordered (z, y, x, E)
    V    = unpatchify3d(X^) in R^(E x gz*pz x gy*py x gx*px), cropped to the input's (D, H, W)

(cropping drops the voxels of tokens that cover the ViT's internal depth padding).

Mask-name anchors. Mask k becomes the prompt p_k = "This is <name>."; the shared text tower and
projection give u_k = encode_texts(p_k) (T, d_txt) and a 2-layer MLP head f_text (Linear, LeakyReLU,
LayerNorm, Linear) maps it to E: M_k = f_text(u_k).

Voxel-mask probabilities (SegVL Eq. 4), for voxel v and mask k:

    P_kv = (cos(V_v, M_k) + 1) / 2 = (V_v . M_k / (||V_v|| ||M_k||) + 1) / 2      in [0, 1]

trained with ``ctvlp.losses.tversky.TverskyLoss`` on the sampler's masks.

Visual enhancement (SegVL Sec. 2.3), with a learnable scalar lambda initialised at 0:

    z = z_img + lambda * AvgPool(f_VE(V))

Memory. The voxel grid costs B * E * D * H * W floats for the activation and as much again for its
gradient, and the probabilities B * K * D * H * W more: E is the knob. One 32 x 256 x 256 sample at
E = 32 holds 2.1 M voxels x 32 x 4 bytes = 268 MB of voxel embeddings in float32; E = 64 doubles it. The
head's last Linear has hidden * P * E weights (16^3 patches, hidden 256, E = 32: 33.6 M), so keep the
hidden width small as well.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ctvlp.models.layers import Triple, as_triple, unpatchify3d


@dataclass
class VoxelHeadConfig:
    """Architecture of a :class:`VoxelHead` (and of the anchor head that must match its ``embed_dim``)."""

    embed_dim: int = 32
    """E: dimension of a voxel embedding and of a mask-name anchor (SegVL's n_logits). Memory grows
    linearly with it (see the module docstring); 32-64 is the useful range."""
    hidden: int = 256
    """Hidden width of the per-token MLP."""
    patch: Triple | None = None
    """The vision tower's patch (pz, py, px): each token becomes pz * py * px voxels; None: taken from
    the tower by :meth:`VoxelHead.for_tower` (how the model builds it, so a recipe's patch change carries)."""

    def __post_init__(self) -> None:
        if self.patch is not None:
            self.patch = as_triple(self.patch, "patch")
        if self.embed_dim < 1 or self.hidden < 1:
            raise ValueError(f"embed_dim and hidden must be positive, got {self.embed_dim}, {self.hidden}")

    @property
    def voxels_per_token(self) -> int:
        """P = pz * py * px."""
        return self.patch[0] * self.patch[1] * self.patch[2]


class VoxelHead(nn.Module):
    """SegVL's f_seg + reshape: tokens (B, N, C) -> voxel embeddings (B, E, D, H, W)."""

    def __init__(self, cfg: VoxelHeadConfig, width: int):
        super().__init__()
        if width < 1 or cfg.patch is None:
            raise ValueError(f"need a positive token width and a patch; got {width}, {cfg.patch}")
        self.cfg, self.width = cfg, width
        self.mlp = nn.Sequential(nn.Linear(width, cfg.hidden), nn.GELU(),
                                 nn.Linear(cfg.hidden, cfg.voxels_per_token * cfg.embed_dim))

    @classmethod
    def for_tower(cls, cfg: VoxelHeadConfig, vision_tower: nn.Module) -> "VoxelHead":
        """A head for a ``VisionTransformer3d`` (its width; its patch, which ``cfg.patch`` must equal when set)."""
        patch = tuple(vision_tower.cfg.patch)
        if cfg.patch is None:
            cfg = dataclasses.replace(cfg, patch=patch)
        if patch != cfg.patch:
            raise ValueError(f"tower patch {patch} != voxel head patch {cfg.patch}")
        return cls(cfg, vision_tower.width)

    def forward(self, tokens: torch.Tensor, grid: Triple, size: Sequence[int] | None = None) -> torch.Tensor:
        """tokens (B, N, C) in z-major order of ``grid`` (gz, gy, gx); ``size`` (D, H, W) of the input
        volume (None: the full grid) -> (B, E, D, H, W); a grid larger than ``size`` is cropped."""
        gz, gy, gx = (int(g) for g in grid)
        if tokens.ndim != 3 or tokens.shape[1] != gz * gy * gx or tokens.shape[2] != self.width:
            raise ValueError(f"tokens must be (B, N = {gz * gy * gx}, C = {self.width}) for grid {tuple(grid)}; "
                             f"got {tuple(tokens.shape)}")
        pz, py, px = self.cfg.patch
        full = (gz * pz, gy * py, gx * px)
        size = full if size is None else tuple(int(s) for s in size)
        if len(size) != 3 or any(not 1 <= s <= f for s, f in zip(size, full)):
            raise ValueError(f"size must be (D, H, W) within the token grid's {full} voxels; got {size}")
        per_token = self.mlp(tokens)  # (B, N, P * E), each token's values in (z, y, x, E) order
        voxels = unpatchify3d(per_token, self.cfg.patch, (gz, gy, gx))  # (B, E, gz*pz, gy*py, gx*px)
        d, h, w = size
        return voxels[:, :, :d, :h, :w]  # (B, E, D, H, W)


def anchor_prompts(names: Sequence[str]) -> list[str]:
    """Mask names -> SegVL's prompts "This is <name>." (underscores read as spaces: ``lung_left`` ->
    "This is lung left.")."""
    prompts = []
    for name in names:
        text = " ".join(str(name).replace("_", " ").split())
        if not text:
            raise ValueError(f"empty mask name in {list(names)!r}")
        prompts.append(f"This is {text}.")
    return prompts


class AnchorHead(nn.Module):
    """SegVL's f_text: text embeddings (K, d_txt) -> anchors (K, E) by Linear, LeakyReLU, LayerNorm,
    Linear (the paper's 2-layer MLP head)."""

    def __init__(self, text_dim: int, embed_dim: int, hidden: int | None = None):
        super().__init__()
        hidden = text_dim if hidden is None else hidden
        if min(text_dim, embed_dim, hidden) < 1:
            raise ValueError(f"text_dim, embed_dim and hidden must be positive, got {text_dim}, {embed_dim}, {hidden}")
        self.net = nn.Sequential(nn.Linear(text_dim, hidden), nn.LeakyReLU(), nn.LayerNorm(hidden),
                                 nn.Linear(hidden, embed_dim))

    def forward(self, text_emb: torch.Tensor) -> torch.Tensor:
        return self.net(text_emb)  # (K, E)


def anchor_probabilities(voxel_emb: torch.Tensor, anchors: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """P = (cos(V, M_k) + 1) / 2: voxel_emb (B, E, D, H, W) and anchors (K, E) -> (B, K, D, H, W) in [0, 1].

    Computed as (V . M^_k) / max(||V||, eps) with M^_k = M_k / max(||M_k||, eps), so only a (B, K, ...) and
    a (B, 1, ...) tensor are added to the voxel grid (no normalised copy of V). A zero voxel gets 0.5."""
    if voxel_emb.ndim != 5 or anchors.ndim != 2 or anchors.shape[1] != voxel_emb.shape[1]:
        raise ValueError(f"expected voxel_emb (B, E, D, H, W) and anchors (K, E) with the same E; got "
                         f"{tuple(voxel_emb.shape)} and {tuple(anchors.shape)}")
    unit = F.normalize(anchors.to(voxel_emb.dtype), dim=1, eps=eps)  # (K, E)
    dots = torch.einsum("bedhw,ke->bkdhw", voxel_emb, unit)  # (B, K, D, H, W)
    norms = voxel_emb.norm(dim=1, keepdim=True).clamp_min(eps)  # (B, 1, D, H, W)
    return ((dots / norms + 1) / 2).clamp(0.0, 1.0)


@torch.no_grad()
def zero_shot_segment(voxel_emb: torch.Tensor, anchors: torch.Tensor,
                      threshold: float | None = None) -> torch.Tensor:
    """Zero-shot segmentation for any prompts' anchors, without gradients: probabilities (B, K, D, H, W),
    or bool masks P > ``threshold`` when given."""
    probs = anchor_probabilities(voxel_emb, anchors)
    return probs if threshold is None else probs > threshold


def resize_masks(masks: torch.Tensor, size: Sequence[int],
                 mode: Literal["nearest", "area"] = "nearest") -> torch.Tensor:
    """masks (B, K, D, H, W) bool/uint8 -> float (B, K, *size). ``nearest``: nearest-exact voxel (stays
    binary); ``area``: each output voxel is the covered fraction (soft targets in [0, 1], for
    downsampling). Not needed for training: the sampler's masks already share the image's grid."""
    if masks.ndim != 5:
        raise ValueError(f"masks must be (B, K, D, H, W), got {tuple(masks.shape)}")
    size = tuple(int(s) for s in size)
    if len(size) != 3 or min(size) < 1:
        raise ValueError(f"size must be three positive ints (D, H, W), got {size}")
    x = masks.float()
    if tuple(x.shape[2:]) == size:
        return x
    if mode == "nearest":
        return F.interpolate(x, size=size, mode="nearest-exact")
    if mode == "area":
        return F.adaptive_avg_pool3d(x, size)
    raise ValueError(f"mode must be 'nearest' or 'area', got {mode!r}")


def segmentation_outputs(voxel_emb: torch.Tensor, anchors: torch.Tensor, masks: torch.Tensor,
                         mask_available: torch.Tensor | None = None,
                         slice_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The keyword arguments of ``TverskyLoss``: ``seg_probs`` (B, K, D, H, W), ``seg_targets`` (same,
    float) and ``seg_available`` (B, K) bool (all True when None).

    ``masks`` (B, K, D, H, W) as the loader batches them (the image's grid). With ``slice_mask`` (B, D)
    both probabilities and targets are zeroed on slices that are not real, so each distinct slice counts
    once: depth padding (air with ``zero``, copies with ``repeat``) adds no TP, FP or FN."""
    probs = anchor_probabilities(voxel_emb, anchors)  # (B, K, D, H, W)
    if masks.shape != probs.shape:
        raise ValueError(f"masks {tuple(masks.shape)} must match the probabilities {tuple(probs.shape)} "
                         f"(crop the voxel grid to the image, or see resize_masks)")
    targets = masks.to(probs.dtype)
    if slice_mask is not None:
        if tuple(slice_mask.shape) != (probs.shape[0], probs.shape[2]):
            raise ValueError(f"slice_mask must be (B, D) = {(probs.shape[0], probs.shape[2])}; "
                             f"got {tuple(slice_mask.shape)}")
        keep = slice_mask.to(device=probs.device, dtype=probs.dtype)[:, None, :, None, None]  # (B, 1, D, 1, 1)
        probs, targets = probs * keep, targets * keep
    if mask_available is None:
        mask_available = torch.ones(probs.shape[:2], dtype=torch.bool, device=probs.device)
    return {"seg_probs": probs, "seg_targets": targets, "seg_available": mask_available.to(probs.device, torch.bool)}


class VisualEnhancement(nn.Module):
    """z = z_img + lambda * AvgPool(f_VE(V)), lambda a learnable scalar initialised at 0 (the model
    starts exactly as without it) and f_VE a Linear E -> d_img.

    f_VE is affine, so AvgPool(f_VE(V)) = f_VE(AvgPool(V)): the voxels are averaged first (over the real
    slices when ``slice_mask`` is given) and the Linear runs once per sample. Add it before the image
    embedding is normalised. At lambda = 0, f_VE gets no gradient; lambda moves first (ReZero-like)."""

    def __init__(self, embed_dim: int, image_dim: int):
        super().__init__()
        if min(embed_dim, image_dim) < 1:
            raise ValueError(f"embed_dim and image_dim must be positive, got {embed_dim}, {image_dim}")
        self.f_ve = nn.Linear(embed_dim, image_dim)
        self.scale = nn.Parameter(torch.zeros(()))  # lambda

    def pooled(self, voxel_emb: torch.Tensor, slice_mask: torch.Tensor | None = None) -> torch.Tensor:
        """z_seg = f_VE(mean of V over its (real) voxels): (B, E, D, H, W) -> (B, d_img)."""
        if voxel_emb.ndim != 5:
            raise ValueError(f"voxel_emb must be (B, E, D, H, W), got {tuple(voxel_emb.shape)}")
        if slice_mask is None:
            mean = voxel_emb.mean(dim=(2, 3, 4))  # (B, E)
        else:
            if tuple(slice_mask.shape) != (voxel_emb.shape[0], voxel_emb.shape[2]):
                raise ValueError(f"slice_mask must be (B, D) = {(voxel_emb.shape[0], voxel_emb.shape[2])}; "
                                 f"got {tuple(slice_mask.shape)}")
            w = slice_mask.to(device=voxel_emb.device, dtype=voxel_emb.dtype)  # (B, D)
            per_slice = voxel_emb.mean(dim=(3, 4))  # (B, E, D)
            mean = (per_slice * w[:, None]).sum(-1) / w.sum(-1, keepdim=True).clamp_min(1.0)  # (B, E)
        return self.f_ve(mean)

    def forward(self, z_img: torch.Tensor, voxel_emb: torch.Tensor,
                slice_mask: torch.Tensor | None = None) -> torch.Tensor:
        """z_img (B, d_img), voxel_emb (B, E, D, H, W) -> (B, d_img)."""
        return z_img + self.scale * self.pooled(voxel_emb, slice_mask)
