"""Heads between a tower's tokens and the shared embedding space: pooling and projection."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over valid tokens: tokens (B, N, C), mask (B, N) bool or None -> (B, C)."""
    if mask is None:
        return tokens.mean(dim=1)
    weights = mask.to(tokens.dtype).unsqueeze(-1)  # (B, N, 1)
    return (tokens * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


def masked_max(tokens: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Channel-wise max over valid tokens: tokens (B, N, C), mask (B, N) bool or None -> (B, C).
    A finding that fills a few tokens moves the max as much as one that fills many (the mean dilutes it)."""
    if mask is None:
        return tokens.amax(dim=1)
    return tokens.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(dim=1)


def multiscale_pool(tokens: torch.Tensor, mask: torch.Tensor | None, grid: tuple[int, int, int],
                    cells: tuple[int, int, int] = (2, 2, 2)) -> torch.Tensor:
    """Uniferum's multi-scale token pooling: the masked mean over all tokens concatenated with the masked
    means over a coarse ``cells`` grid (adaptive bins of the token grid, z-major):
    tokens (B, N, C) on ``grid`` (gz, gy, gx), mask (B, N) -> (B, (1 + prod(cells)) C). A cell with no
    valid token gives zeros."""
    b, n, c = tokens.shape
    gz, gy, gx = grid
    if n != gz * gy * gx:
        raise ValueError(f"tokens (B, {n}, C) do not fill the grid {tuple(grid)}")
    weights = torch.ones(b, n, device=tokens.device, dtype=tokens.dtype) if mask is None else mask.to(tokens.dtype)
    x = (tokens * weights[..., None]).transpose(1, 2).reshape(b, c, gz, gy, gx)  # (B, C, gz, gy, gx)
    w = weights.reshape(b, 1, gz, gy, gx)
    sums = F.adaptive_avg_pool3d(x, cells) / F.adaptive_avg_pool3d(w, cells).clamp_min(1e-6)  # (B, C, *cells)
    return torch.cat((masked_mean(tokens, mask), sums.flatten(2).transpose(1, 2).flatten(1)), dim=1)


class AttentionPool(nn.Module):
    """Multi-head attention pooling with the masked mean token as the query, after a LayerNorm
    (``image_pool="attention"``): out = softmax(q K^T / sqrt(d)) V over the valid tokens,
    q = masked_mean(tokens). COLIPRI's own image head is :class:`ProjectedAttentionPool`."""

    def __init__(self, width: int, heads: int = 8):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.norm = nn.LayerNorm(width)
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(width, 2 * width)
        self.out = nn.Linear(width, width)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, c = tokens.shape
        x = self.norm(tokens)
        q = self.q(masked_mean(x, mask)).view(b, self.heads, 1, c // self.heads)  # (B, h, 1, d)
        k, v = self.kv(x).view(b, n, 2, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)  # 2 x (B, h, N, d)
        attn_mask = None if mask is None else mask[:, None, None, :]  # (B, 1, 1, N)
        pooled = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (B, h, 1, d)
        return self.out(pooled.reshape(b, c))


class ProjectedAttentionPool(nn.Module):
    """COLIPRI's image head: tokens projected to the shared dimension (the authors' 1x1x1 Conv3d with bias,
    here the same map as a Linear on tokens), then torch's ``nn.MultiheadAttention`` whose one query is the
    masked mean of the projected tokens; no LayerNorm. tokens (B, N, width), mask (B, N) -> (B, dim).

    The output is already in the shared space (no projection follows it). Padded tokens are neither keys
    nor part of the query's mean (the authors pool whole fixed-size crops without a mask)."""

    def __init__(self, width: int, dim: int, heads: int = 12):
        super().__init__()
        if dim % heads:
            raise ValueError(f"image pool dimension {dim} is not divisible by image_pool_heads {heads}")
        self.proj = nn.Linear(width, dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.proj(tokens)  # (B, N, dim)
        query = masked_mean(x, mask)[:, None]  # (B, 1, dim)
        padding = None if mask is None else ~mask.bool()  # (B, N), True = ignore
        pooled, _ = self.attn(query, x, x, key_padding_mask=padding, need_weights=False)  # (B, 1, dim)
        return pooled[:, 0]


class Projection(nn.Module):
    """Map a tower's width to the shared dimension: ``none`` (identity, width = dim), ``linear``, a two-layer
    ``mlp`` (GELU), ``mlp_ln``
    (Linear, LeakyReLU, LayerNorm, Linear: SegVL's heads) or ``mlp_bn`` (Linear, BatchNorm, GELU, Linear as in
    SimCLR's head). Batch normalisation removes the component
    that every sample shares, which otherwise dominates both towers' features at initialisation (cosine
    ~0.97 between different CT volumes, and between reports that differ in one finding) and lets a
    contrastive loss sit at the collapsed solution where every pair has the same similarity."""

    def __init__(self, width: int, dim: int, kind: str = "linear"):
        super().__init__()
        if kind == "none":
            if width != dim:
                raise ValueError(f"projection 'none' keeps the features as they are, so the tower's width {width} "
                                 f"must equal embed_dim {dim}")
            self.net = nn.Identity()
        elif kind == "linear":
            self.net = nn.Linear(width, dim, bias=False)
        elif kind == "mlp":
            self.net = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, dim))
        elif kind == "mlp_ln":
            self.net = nn.Sequential(nn.Linear(width, width), nn.LeakyReLU(), nn.LayerNorm(width),
                                     nn.Linear(width, dim))
        elif kind == "mlp_bn":
            self.net = nn.Sequential(nn.Linear(width, width), nn.BatchNorm1d(width), nn.GELU(), nn.Linear(width, dim))
        else:
            raise ValueError(f"projection must be 'none', 'linear', 'mlp', 'mlp_ln' or 'mlp_bn', got {kind!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
