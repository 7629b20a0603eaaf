"""Axial 3D rotary position embedding (RoPE) for volumes of patch tokens (SigVLP, COLIPRI/Primus).

Each head's first ``r`` dimensions are rotated, the rest pass through unchanged (``fraction``; SigVLP
and COLIPRI rotate all of each head). The rotated dimensions are split into three
consecutive blocks ``(d_z, d_y, d_x)``, one per axis. Inside the block of axis ``a`` the pair
``(2k, 2k + 1)`` is rotated by the angle

    theta = p_a * base ** (-2k / d_a),    k = 0 .. d_a / 2 - 1,

where ``p_a`` is the token's integer patch index on axis ``a`` (METHODS.md, SigVLP). Because a
rotation by ``theta(p)`` of q and by ``theta(p')`` of k leaves ``q . k`` a function of ``p - p'``
only, attention scores depend on the 3D offset between two tokens and never on where they are:
nothing bounds ``p_z``, so any number of slices works.

Block sizes: ``r = 2 * floor(fraction * head_dim / 2)`` rotated dimensions, i.e. ``P = r / 2`` pairs,
shared as equally as possible with the one or two left-over pairs going to x, then y (the in-plane
axes usually have the longer grids): ``P = 33`` (head_dim 66, SigVLP) -> 22 + 22 + 22 dims;
head_dim 72 (Primus-M) -> 24 + 24 + 24, at 2/3 -> 16 + 16 + 16; head_dim 64 -> 20 + 22 + 22. Every
block is even for any head_dim. An explicit ``split`` (e.g. METHODS.md's 16 + 24 + 24 for head_dim 64)
overrides the rule.

With ``base`` 10000 and equal blocks this is timm's ``RotaryEmbeddingCat(in_pixels=False)`` as Primus
(COLIPRI) uses it: ``d_a / 2`` bands ``10000 ** (-k / (d_a / 2))`` per axis, each angle repeated for
the two dims of its interleaved pair, the axes' blocks concatenated in the order of the tensor's axes
(theirs (x, y, z), ours (z, y, x): ``ctvlp.models.import_colipri`` permutes the blocks).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

Grid = tuple[int, int, int]


def rope_split(head_dim: int, fraction: float = 1.0) -> Grid:
    """(d_z, d_y, d_x) rotated dimensions per axis for ``head_dim`` and ``fraction`` (rule above)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"rope fraction must be in (0, 1], got {fraction}")
    pairs = int(fraction * head_dim + 1e-9) // 2
    if pairs < 3:
        raise ValueError(f"head_dim {head_dim} at fraction {fraction} leaves {2 * pairs} dims; 3D RoPE needs >= 6")
    q, rem = divmod(pairs, 3)
    return 2 * q, 2 * (q + (rem >= 2)), 2 * (q + (rem >= 1))


def grid_positions(grid: Grid, z_offset: int = 0, device: torch.device | str | None = None) -> torch.Tensor:
    """Integer patch indices (N, 3) of a (gz, gy, gx) grid in z-major order, z starting at ``z_offset``."""
    gz, gy, gx = grid
    axes = [torch.arange(z_offset, z_offset + gz, device=device), torch.arange(gy, device=device),
            torch.arange(gx, device=device)]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)  # (N, 3)


def rope_angles(positions: Grid | torch.Tensor, head_dim: int, base: float = 1000.0, fraction: float = 1.0,
                split: Grid | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin (..., N, r) of the rotation angles, each angle repeated for both dims of its pair.

    ``positions`` is a (gz, gy, gx) grid (z-major tokens, indices from 0) or an integer tensor
    (..., N, 3) of (z, y, x) patch indices. ``r = sum(split)`` dims of each head are rotated.
    """
    split = rope_split(head_dim, fraction) if split is None else tuple(split)
    if len(split) != 3 or any(d <= 0 or d % 2 for d in split) or sum(split) > head_dim:
        raise ValueError(f"rope split {split} must be three positive even sizes summing to <= head_dim {head_dim}")
    if base <= 1.0:
        raise ValueError(f"rope base must be > 1, got {base}")
    if not isinstance(positions, torch.Tensor):
        positions = grid_positions(tuple(positions))
    if positions.shape[-1] != 3 or positions.is_floating_point():
        raise ValueError(f"positions must be an integer tensor (..., N, 3), got {positions.dtype} {tuple(positions.shape)}")
    pos = positions.to(torch.float64)
    blocks = []
    for axis, d in enumerate(split):
        freqs = base ** (-torch.arange(0, d, 2, dtype=torch.float64, device=pos.device) / d)  # (d/2,)
        blocks.append(pos[..., axis, None] * freqs)  # (..., N, d/2)
    angles = torch.cat(blocks, dim=-1).repeat_interleave(2, dim=-1)  # (..., N, r)
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (2k, 2k + 1) of the first r dims of x (B, H, N, hd) by cos, sin (N, r) or (B, N, r)."""
    if cos.dim() == 3:
        cos, sin = cos[:, None], sin[:, None]  # (B, 1, N, r)
    r = cos.shape[-1]
    if r > x.shape[-1] or cos.shape[-2] != x.shape[-2]:
        raise ValueError(f"rope tables {tuple(cos.shape)} do not fit x {tuple(x.shape)}")
    rot, rest = x[..., :r], x[..., r:]
    pairs = rot.unflatten(-1, (r // 2, 2))  # (B, H, N, r/2, 2)
    swapped = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)  # (B, H, N, r)
    out = rot * cos.to(x.dtype) + swapped * sin.to(x.dtype)
    return torch.cat((out, rest), dim=-1)


class Rope3d(nn.Module):
    """cos/sin tables for one head size, cached per (grid, z_offset, device); no parameters.

    Tables are computed in float64 on the CPU (exact for long z; MPS has no float64), then moved; the
    ``cache_size`` most recently used are kept (volumes of many depths must not fill the GPU).
    """

    cache_size = 16

    def __init__(self, head_dim: int, base: float = 1000.0, fraction: float = 1.0, split: Grid | None = None):
        super().__init__()
        self.head_dim, self.base, self.fraction = head_dim, base, fraction
        self.split = rope_split(head_dim, fraction) if split is None else tuple(split)
        rope_angles((1, 1, 1), head_dim, base, fraction, self.split)  # validate once, early
        self._cache: OrderedDict[tuple, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()

    def forward(self, grid: Grid, z_offset: int = 0, device: torch.device | str | None = None):
        """cos, sin (N, r) for the z-major tokens of ``grid`` with z indices from ``z_offset``."""
        key = (tuple(grid), int(z_offset), str(device))
        if key in self._cache:
            self._cache.move_to_end(key)
        else:
            pos = grid_positions(tuple(grid), int(z_offset))
            cos, sin = rope_angles(pos, self.head_dim, self.base, self.fraction, self.split)
            self._cache[key] = cos.to(device), sin.to(device)
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return self._cache[key]

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, base={self.base}, split={self.split}"
