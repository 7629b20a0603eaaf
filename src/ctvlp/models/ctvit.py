"""CT-CLIP's vision encoder, CTViT (Hamamci et al., CT-CLIP; authors' code ``transformer_maskgit/ctvit.py``,
``attention.py``; vector quantiser from ``vector-quantize-pytorch==1.1.2``, which they pin).

A volume (B, C, Z, Y, X) is cut into patches of (pz, py, px) = (10, 20, 20) voxels; each patch vector, in
the order (c, pz, py, px), goes through LayerNorm -> Linear -> LayerNorm. Their code names the axes
(t, h, w): our Z is their t (the slabs), Y their h, X their w. Then ``spatial_depth`` layers attend within
each slab over its (h, w) grid, ``temporal_depth`` layers attend along z at each (h, w); every layer is

    x = x + PEG(x)            depthwise 3x3x3 Conv3d, zero padding, causal in z (pads 2 slabs before, 0 after)
    x = x + Attn(x)           cosine-similarity attention: q, k l2-normalised, times learned per-dim q/k
                              scales, logits x 8; spatial layers add a continuous position bias (an MLP
                              over sign(d) log(1 + |d|) of the (h, w) offsets, SwinV2)
    x = x + FF(x)             LayerNorm -> Linear(dim, 2 inner, no bias) -> GEGLU -> Linear(inner, dim, no
                              bias), inner = int(4 * 2/3 * dim)

and each stack ends with a bias-free LayerNorm. The tokens are vector-quantised against a cosine codebook
(8,192 x 512; argmax of cosine similarity, EMA decay 0.8, straight-through gradient). CT-CLIP's pooled
feature is the mean over slabs of the quantised tokens, flattened (h, w, d) -> h * w * dim (294,912 at
the paper's size), which the VLP projects with a bias-free Linear to 512.

Their quirks kept because they change the numbers (each checked against their code by
``tests/test_ctclip_equivalence.py`` when its fixture is present):

- the attention's pre-norm feeds only the query: keys and values are computed from the un-normalised
  input (``kv_input = default(context, x)`` is taken before ``x = self.norm(x)``);
- the temporal layers' PEG reshapes the ((b h w), t, d) sequence straight into (b, t, h, w, d) with
  ``reshape`` (not a permutation), so its 3^3 conv mixes tokens that are not neighbours in the volume;
  only the spatial layers' PEG sees the true grid (and is causal in z there);
- the spatial position bias is recomputed for the grid on every call; self-attention has no null key/value.

There is no token masking: CT-CLIP crops/pads every volume to one size, and the slab mean includes padding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CTViTConfig", "CTViT", "ctvit_config", "CTVIT_SIZES"]


@dataclass
class CTViTConfig:
    """CTViT's sizes. ``image_size`` is (Z, Y, X) in voxels and must be divisible by ``patch``."""

    kind: Literal["ctvit"] = "ctvit"
    """Tower marker: which config a saved dict is (``vit`` / ``resnet`` / ``ctvit``)."""
    size: str = "ctclip"
    """Named size this config came from (``ctclip``: the paper; ``debug``: tiny)."""
    in_chans: int = 1
    """Input channels (CT-CLIP: one, HU / 1000 clipped to [-1, 1])."""
    image_size: tuple[int, int, int] = (240, 480, 480)
    """The one input size (Z, Y, X) in voxels the tower takes; samples are cropped/padded to it."""
    patch: tuple[int, int, int] = (10, 20, 20)
    """Patch (Z, Y, X) in voxels: 10 slices x 20 x 20 in CT-CLIP."""
    width: int = 512
    """Token width."""
    spatial_depth: int = 4
    """Spatial layers (attention within a slab, with the position-bias MLP)."""
    temporal_depth: int = 4
    """Temporal layers (attention along z between the slabs at one (h, w))."""
    heads: int = 8
    """Attention heads per layer."""
    head_dim: int = 32
    """Width of one head."""
    ff_mult: float = 4.0
    """GEGLU feed-forward hidden width as a multiple of ``width``."""
    attn_scale: float = 8.0
    """Scale of the cosine-similarity attention logits (CT-CLIP: 8)."""
    codebook_size: int = 8192
    """Codes of the cosine vector-quantised codebook."""
    vq_decay: float = 0.8
    """EMA decay of the codebook (vector-quantize-pytorch's default, which CT-CLIP keeps)."""

    def __post_init__(self):
        self.image_size = tuple(int(v) for v in self.image_size)
        self.patch = tuple(int(v) for v in self.patch)
        if len(self.image_size) != 3 or len(self.patch) != 3:
            raise ValueError(f"image_size and patch must be (Z, Y, X), got {self.image_size} and {self.patch}")
        if min(self.patch) < 1 or any(s % p for s, p in zip(self.image_size, self.patch)):
            raise ValueError(f"image_size {self.image_size} must be a positive multiple of patch {self.patch}")
        for name in ("width", "heads", "head_dim", "codebook_size", "in_chans"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.spatial_depth < 0 or self.temporal_depth < 0:
            raise ValueError("spatial_depth and temporal_depth must be >= 0")
        if not 0.0 <= self.vq_decay < 1.0:
            raise ValueError(f"vq_decay must be in [0, 1), got {self.vq_decay}")

    @property
    def grid(self) -> tuple[int, int, int]:
        """Tokens per axis (slabs, rows, columns)."""
        return tuple(s // p for s, p in zip(self.image_size, self.patch))

    @property
    def pooled_width(self) -> int:
        """Width of CT-CLIP's pooled feature: rows x columns x width."""
        return self.grid[1] * self.grid[2] * self.width


CTVIT_SIZES: dict[str, dict] = {
    "ctclip": dict(),
    "debug": dict(image_size=(8, 32, 32), patch=(4, 8, 8), width=32, spatial_depth=1, temporal_depth=1,
                  heads=2, head_dim=16, codebook_size=64),
}
"""The paper's size (480 x 480 x 240 input, 24 x 24 x 24 tokens) and a tiny one for CPU tests/debug runs."""


def ctvit_config(name: str, **overrides) -> CTViTConfig:
    """The config of a named size (``ctclip`` or ``debug``) with any field overridden."""
    if name not in CTVIT_SIZES:
        raise ValueError(f"unknown CTViT size {name!r}; known: {', '.join(CTVIT_SIZES)}")
    if unknown := set(overrides) - {f.name for f in fields(CTViTConfig)}:
        raise ValueError(f"unknown CTViTConfig fields: {sorted(unknown)}")
    return CTViTConfig(**{"size": name, **CTVIT_SIZES[name], **overrides})


class PEG(nn.Module):
    """Position-generating depthwise 3^3 conv; ``causal`` pads z by (2, 0) so slab z sees z-2..z only."""

    def __init__(self, dim: int, causal: bool = True):
        super().__init__()
        self.causal = causal
        self.conv = nn.Conv3d(dim, dim, 3, groups=dim)

    def forward(self, x: torch.Tensor, shape: tuple[int, int, int, int]) -> torch.Tensor:
        # x: (..., d) holding B*Z*Y*X tokens; shape = (B, Z, Y, X). A plain reshape, as theirs (see module doc).
        orig = x.shape
        x = x.reshape(*shape, orig[-1]).permute(0, 4, 1, 2, 3)  # (B, d, Z, Y, X)
        x = F.pad(x, (1, 1, 1, 1, *((2, 0) if self.causal else (1, 1))))
        return self.conv(x).permute(0, 2, 3, 4, 1).reshape(orig)


class CosineAttention(nn.Module):
    """Cosine-similarity self-attention; the LayerNorm feeds the query only (their quirk)."""

    def __init__(self, dim: int, heads: int, head_dim: int, scale: float):
        super().__init__()
        self.heads, self.scale = heads, scale
        self.norm = nn.LayerNorm(dim, bias=False)
        self.to_q = nn.Linear(dim, heads * head_dim, bias=False)
        self.to_kv = nn.Linear(dim, 2 * heads * head_dim, bias=False)
        self.q_scale = nn.Parameter(torch.ones(head_dim))
        self.k_scale = nn.Parameter(torch.ones(head_dim))
        self.to_out = nn.Linear(heads * head_dim, dim, bias=False)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        # x: (S, N, d); bias: (heads, N, N) or None
        s, n, _ = x.shape
        k, v = self.to_kv(x).chunk(2, dim=-1)  # from the un-normalised x
        q = self.to_q(self.norm(x))
        q, k, v = (t.view(s, n, self.heads, -1).transpose(1, 2) for t in (q, k, v))  # (S, H, N, hd)
        q = F.normalize(q, dim=-1) * self.q_scale
        k = F.normalize(k, dim=-1) * self.k_scale
        sim = q @ k.transpose(-1, -2) * self.scale  # (S, H, N, N)
        if bias is not None:
            sim = sim + bias
        out = sim.softmax(dim=-1) @ v  # (S, H, N, hd)
        return self.to_out(out.transpose(1, 2).reshape(s, n, -1))


class GEGLUFeedForward(nn.Module):
    """LayerNorm -> Linear(dim, 2 inner) -> GELU(gate) * value -> Linear(inner, dim); no biases in the linears."""

    def __init__(self, dim: int, mult: float):
        super().__init__()
        inner = int(mult * (2 / 3) * dim)
        self.norm = nn.LayerNorm(dim)
        self.w_in = nn.Linear(dim, 2 * inner, bias=False)
        self.w_out = nn.Linear(inner, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, gate = self.w_in(self.norm(x)).chunk(2, dim=-1)
        return self.w_out(F.gelu(gate) * x)


class CTViTBlock(nn.Module):
    """PEG, attention and feed-forward, each residual."""

    def __init__(self, cfg: CTViTConfig):
        super().__init__()
        self.peg = PEG(cfg.width, causal=True)
        self.attn = CosineAttention(cfg.width, cfg.heads, cfg.head_dim, cfg.attn_scale)
        self.ff = GEGLUFeedForward(cfg.width, cfg.ff_mult)

    def forward(self, x, shape, bias=None):
        x = x + self.peg(x, shape)
        x = x + self.attn(x, bias)
        return x + self.ff(x)


class ContinuousPositionBias(nn.Module):
    """SwinV2's bias: an MLP (LeakyReLU 0.1) from log-spaced relative (h, w) offsets to one bias per head."""

    def __init__(self, dim: int, heads: int, layers: int = 2):
        super().__init__()
        sizes = [2] + [dim] * layers
        self.net = nn.ModuleList([nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:])] + [nn.Linear(dim, heads)])

    def forward(self, h: int, w: int) -> torch.Tensor:
        device = self.net[0].weight.device
        grid = torch.stack(torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device),
                                          indexing="ij")).flatten(1).T  # (h w, 2)
        rel = (grid[:, None] - grid[None]).float()  # (hw, hw, 2)
        rel = torch.sign(rel) * torch.log(rel.abs() + 1)
        for layer in self.net[:-1]:
            rel = F.leaky_relu(layer(rel), 0.1)
        return self.net[-1](rel).permute(2, 0, 1)  # (heads, hw, hw)


class Transformer(nn.Module):
    def __init__(self, cfg: CTViTConfig, depth: int):
        super().__init__()
        self.blocks = nn.ModuleList(CTViTBlock(cfg) for _ in range(depth))
        self.norm_out = nn.LayerNorm(cfg.width, bias=False)
        self.grad_checkpointing = False  # CTViT.set_grad_checkpointing (TrainConfig.grad_checkpointing) turns it on

    def forward(self, x, shape, bias=None):
        for block in self.blocks:
            if self.grad_checkpointing and self.training:
                x = torch.utils.checkpoint.checkpoint(block, x, shape, bias, use_reentrant=False)
            else:
                x = block(x, shape, bias)
        return self.norm_out(x)


class CosineVectorQuantizer(nn.Module):
    """Cosine-similarity codebook as vector-quantize-pytorch 1.1.2's ``CosineSimCodebook`` (no k-means init,
    no dead-code expiry): codes = argmax of cosine similarity to the l2-normalised codebook; output = the code
    (straight-through gradient to the input); in training the codebook moves by EMA (decay ``decay``) toward
    the normalised mean of its assigned inputs and is renormalised. The commitment loss is
    mse(output.detach(), input) in training (weight 1), 0 in eval."""

    def __init__(self, dim: int, size: int, decay: float):
        super().__init__()
        self.decay = decay
        embed = torch.empty(size, dim)
        nn.init.kaiming_uniform_(embed)
        self.register_buffer("embed", F.normalize(embed, dim=-1))  # (K, d)
        self.register_buffer("cluster_size", torch.zeros(size))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # x: (B, N, d) -> (quantised (B, N, d), codes (B, N), commitment loss ())
        flat = F.normalize(x.reshape(-1, x.shape[-1]), dim=-1)  # (BN, d)
        codes = (flat @ self.embed.T).argmax(dim=-1)  # (BN,)
        quantize = self.embed[codes].view_as(x)
        loss = x.new_zeros(())
        if self.training:
            with torch.no_grad():
                onehot = F.one_hot(codes, self.embed.shape[0]).type(flat.dtype)  # (BN, K)
                bins = onehot.sum(0)  # (K,)
                self.cluster_size.mul_(self.decay).add_(bins, alpha=1 - self.decay)
                mean = F.normalize(onehot.T @ flat.detach() / bins.clamp(min=1)[:, None], dim=-1)
                mean = torch.where(bins[:, None] == 0, self.embed, mean)
                self.embed.copy_(F.normalize(self.embed * self.decay + mean * (1 - self.decay), dim=-1))
            loss = F.mse_loss(quantize.detach(), x)
            quantize = x + (quantize - x).detach()
        return quantize, codes.view(x.shape[:-1]), loss


class CTViT(nn.Module):
    """CT-CLIP's encoder; returns the same dict as the other towers plus ``tokens_pre_vq``, ``codes`` and
    ``vq_loss``. ``pooled`` is CT-CLIP's: slab mean of the quantised tokens flattened to ``pooled_width``."""

    def __init__(self, cfg: CTViTConfig):
        super().__init__()
        self.cfg, self.width, self.pooled_width = cfg, cfg.width, cfg.pooled_width
        pz, py, px = cfg.patch
        patch_dim = cfg.in_chans * pz * py * px
        self.patch_norm_in = nn.LayerNorm(patch_dim)
        self.patch_proj = nn.Linear(patch_dim, cfg.width)
        self.patch_norm_out = nn.LayerNorm(cfg.width)
        self.spatial_bias = ContinuousPositionBias(cfg.width, cfg.heads)
        self.spatial = Transformer(cfg, cfg.spatial_depth)
        self.temporal = Transformer(cfg, cfg.temporal_depth)
        self.vq = CosineVectorQuantizer(cfg.width, cfg.codebook_size, cfg.vq_decay)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each transformer layer in the backward pass."""
        self.spatial.grad_checkpointing = self.temporal.grad_checkpointing = enable

    def no_weight_decay(self) -> set[str]:
        """Parameter names that should not be weight-decayed (timm's convention): none (their optimiser
        decays everything)."""
        return set()

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, Z, Y, X) -> (B, z, y, x, C*pz*py*px), patch vector ordered (c, pz, py, px) as theirs."""
        b, c = x.shape[:2]
        (pz, py, px), (gz, gy, gx) = self.cfg.patch, self.cfg.grid
        x = x.reshape(b, c, gz, pz, gy, py, gx, px).permute(0, 2, 4, 6, 1, 3, 5, 7)
        return x.reshape(b, gz, gy, gx, -1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, Z, Y, X) -> tokens before quantisation (B, z, y, x, d)."""
        if x.ndim != 5 or x.shape[1] != self.cfg.in_chans or tuple(x.shape[2:]) != self.cfg.image_size:
            raise ValueError(f"CTViT expects (B, {self.cfg.in_chans}, *{self.cfg.image_size}) (B, C, Z, Y, X) "
                             f"as configured by image_size; got {tuple(x.shape)}")
        t = self.patch_norm_out(self.patch_proj(self.patch_norm_in(self.patchify(x))))  # (B, z, y, x, d)
        b, gz, gy, gx, d = t.shape
        shape = (b, gz, gy, gx)
        t = self.spatial(t.reshape(b * gz, gy * gx, d), shape, self.spatial_bias(gy, gx))  # ((B z), (y x), d)
        t = t.view(b, gz, gy, gx, d).permute(0, 2, 3, 1, 4).reshape(b * gy * gx, gz, d)  # ((B y x), z, d)
        t = self.temporal(t, shape)
        return t.view(b, gy, gx, gz, d).permute(0, 3, 1, 2, 4)  # (B, z, y, x, d)

    def forward(self, x: torch.Tensor, slice_mask: torch.Tensor | None = None, z_offset: int = 0) -> dict:
        """``slice_mask`` is accepted for the tower interface and ignored (CT-CLIP masks nothing)."""
        pre = self.encode(x)  # (B, z, y, x, d)
        b, gz, gy, gx, d = pre.shape
        tokens, codes, vq_loss = self.vq(pre.reshape(b, -1, d))  # (B, N, d)
        pooled = tokens.view(b, gz, gy, gx, d).mean(dim=1).reshape(b, -1)  # (B, y*x*d)
        mask = torch.ones(b, gz * gy * gx, dtype=torch.bool, device=x.device)
        return {"tokens": tokens, "token_mask": mask, "grid": (gz, gy, gx), "pooled": pooled,
                "tokens_pre_vq": pre.reshape(b, -1, d), "codes": codes, "vq_loss": vq_loss}
