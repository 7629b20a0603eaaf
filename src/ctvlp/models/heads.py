"""Heads between a tower's tokens and the shared embedding space: pooling and projection."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import skip_init


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
    """Multi-head attention pooling, the one pooling head of both towers: one query attends over the real
    tokens (torch's ``nn.MultiheadAttention``, padding masked out as keys) and its output is the pooled
    vector. tokens (B, N, width), mask (B, N) bool (True = real) or None -> (B, dim):

        x = LN(proj(tokens))           (each optional: ``dim`` adds the Linear, ``norm`` the LayerNorm)
        q = masked_mean(x) | a learned token                                  (``query``)
        out = MHA(q, x, x) = W_o [softmax(q_h K_h^T / sqrt(d)) V_h]_h

    | use                                                 | ``dim`` | ``norm`` | ``query`` |
    |-----------------------------------------------------|---------|----------|-----------|
    | image ``attention``                                 |         | yes      | mean      |
    | image ``projected_attention`` (COLIPRI's head)      | embed   |          | mean      |
    | text ``attention``                                  |         | yes      | learned   |
    | text ``mean_query`` (COLIPRI's ``AttentionPool1D``) |         |          | mean      |

    COLIPRI's image head projects with the authors' 1x1x1 Conv3d with bias (here the same map as a Linear on
    tokens) and its output is already in the shared space (no projection follows it); padded tokens are
    neither keys nor part of the query's mean (the authors pool whole fixed-size crops without a mask).

    ``init="linear"`` draws the attention's weights as three ``nn.Linear`` (query; key and value; output)
    in that order, as the image ``attention`` pool did when it was written with its own linears, so that
    configuration starts from the same numbers as before; ``"torch"``: ``nn.MultiheadAttention``'s own
    initialisation. State dicts of that former pool (``q.*``, ``kv.*``, ``out.*``) load into this one.
    """

    def __init__(self, width: int, heads: int = 8, dim: int | None = None, norm: bool = False,
                 query: Literal["mean", "learned"] = "mean", init: Literal["torch", "linear"] = "torch"):
        super().__init__()
        d = width if dim is None else dim
        if d % heads:
            raise ValueError(f"attention pool dimension {d} is not divisible by heads {heads} (the image pool's "
                             f"heads: model.image_pool_heads)")
        if query not in ("mean", "learned") or init not in ("torch", "linear"):
            raise ValueError(f"query must be 'mean' or 'learned' and init 'torch' or 'linear'; got {query!r}, {init!r}")
        self.query = nn.Parameter(torch.randn(1, 1, d) * d**-0.5) if query == "learned" else None
        self.proj = None if dim is None else nn.Linear(width, dim)
        self.norm = nn.LayerNorm(d) if norm else None
        if init == "torch":
            self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        else:
            self.attn = skip_init(nn.MultiheadAttention, d, heads, batch_first=True)
            w, b = self.attn.in_proj_weight, self.attn.in_proj_bias
            for weight, bias in ((w[:d], b[:d]), (w[d:], b[d:]), (self.attn.out_proj.weight, self.attn.out_proj.bias)):
                _linear_init(weight, bias)

    def no_weight_decay(self) -> set[str]:
        """A learned query is a token, not a weight matrix (timm's convention for cls tokens)."""
        return set() if self.query is None else {"query"}

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = tokens if self.proj is None else self.proj(tokens)  # (B, N, dim)
        x = x if self.norm is None else self.norm(x)
        learned = self.query is not None
        q = self.query.expand(x.shape[0], -1, -1) if learned else masked_mean(x, mask)[:, None]  # (B, 1, dim)
        padding = None if mask is None else ~mask.bool()  # (B, N), True = ignore
        pooled, _ = self.attn(q, x, x, key_padding_mask=padding, need_weights=False)  # (B, 1, dim)
        return pooled[:, 0]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """The former image ``attention`` pool's separate ``q``, ``kv`` and ``out`` linears -> ``attn``."""
        if prefix + "q.weight" in state_dict:
            old = {name: state_dict.pop(f"{prefix}{name}") for name in
                   ("q.weight", "q.bias", "kv.weight", "kv.bias", "out.weight", "out.bias")}
            state_dict[prefix + "attn.in_proj_weight"] = torch.cat((old["q.weight"], old["kv.weight"]))  # (3C, C)
            state_dict[prefix + "attn.in_proj_bias"] = torch.cat((old["q.bias"], old["kv.bias"]))  # (3C,)
            state_dict[prefix + "attn.out_proj.weight"] = old["out.weight"]
            state_dict[prefix + "attn.out_proj.bias"] = old["out.bias"]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def _linear_init(weight: torch.Tensor, bias: torch.Tensor) -> None:
    """``nn.Linear.reset_parameters`` on a (out, in) weight and its bias (views of a larger tensor allowed)."""
    with torch.no_grad():
        nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
        bound = 1 / math.sqrt(weight.shape[1])
        nn.init.uniform_(bias, -bound, bound)


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
