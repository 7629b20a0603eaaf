"""A plain 3D vision transformer for CT volumes of any depth, with named sizes (timm-like API).

Input: ``x`` (B, C, D, H, W) = (B, 1, Z, Y, X), HU windowed to [-1, 1], and an optional
``slice_mask`` (B, D) bool, True on real slices. Tokens are the (gz, gy, gx) patch grid flattened
z-major. A z-patch is a valid token row if any of its slices is real; invalid tokens are never
attended to (a boolean key-padding mask, ``None`` when the batch has no padding so GPUs keep the
fastest attention kernels) and are left out of the pooled mean.

Depth: any D works. When D is not a multiple of the patch depth pz, the last slice is repeated
internally up to the next multiple (repeat padding, as SigVLP prefers over zeros) and the added slices
are marked invalid. H and W must be multiples of (py, px): a ValueError otherwise.

Positions (``pos``): ``rope`` (axial 3D RoPE in every attention layer, no absolute embedding:
SigVLP, COLIPRI), ``learned`` (absolute embeddings on a maximal grid ``learned_grid``, cropped to the
input's grid from index ``(z_offset, 0, 0)``, so a patch index keeps its meaning at a fixed spacing;
a larger input is an error), or ``none``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Literal

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ctvlp.models.ctvit import CTViT
from ctvlp.models.heads import masked_mean
from ctvlp.models.layers import Block, PatchEmbed3d, Triple, as_triple, init_linear
from ctvlp.models.resnet3d import create_resnet_tower
from ctvlp.models.rope import Rope3d, rope_split



@dataclass
class ViT3dConfig:
    """Architecture of a :class:`VisionTransformer3d` (defaults: the ``debug`` size)."""

    size: str = "debug"
    """Name of the size this config came from (a label; the fields below are what count)."""
    patch: Triple = (8, 16, 16)
    """Patch size (pz, py, px) in voxels; anisotropic allowed."""
    in_chans: int = 1
    """Input channels (1: windowed HU)."""
    width: int = 48
    """Token dimension C."""
    depth: int = 2
    """Number of transformer blocks."""
    heads: int = 3
    """Attention heads (width must be divisible by heads)."""
    mlp: Literal["gelu", "swiglu"] = "gelu"
    """MLP of each block: Linear-GELU-Linear or SwiGLU."""
    mlp_ratio: float | None = None
    """Hidden width / width; None: 4 for ``gelu``, 8/3 for ``swiglu``."""
    pos: Literal["rope", "learned", "none"] = "rope"
    """Position information: 3D RoPE, learned absolute embeddings, or none."""
    rope_base: float = 1000.0
    """RoPE base b (angle p * b^(-2k/d)); SigVLP's ablation prefers 1000 over 10000."""
    rope_fraction: float = 1.0
    """Fraction of each head's dims that RoPE rotates (SigVLP and COLIPRI/Primus: all)."""
    rope_split: Triple | None = None
    """Rotated dims per axis (d_z, d_y, d_x); None: the near-equal rule of ``ctvlp.models.rope``."""
    layerscale: float | None = None
    """Initial LayerScale value on both residual branches; None: no LayerScale."""
    sub_norms: bool = False
    """Eva's sub-LayerNorms in every block: on the attention output before its projection
    (``scale_attn_inner``) and on the MLP's hidden activations before its output (``scale_mlp``)."""
    k_bias: bool = True
    """A bias on the keys (False: q and v only, as Eva)."""
    eva_init: bool = False
    """Eva's init: the timm ViT init, then each block i's attention and MLP output weights divided by
    sqrt(2 (i + 1)), and the patch conv He-normal (negative slope 0.01) with zero bias (Primus)."""
    drop_path: float = 0.0
    """Stochastic depth of the last block; block i uses drop_path * i / (depth - 1)."""
    stem: Literal["none", "conv"] = "none"
    """``conv``: a small 3x3x3 conv stem before the patch conv (see ``PatchEmbed3d``)."""
    stem_width: int = 32
    """Channels of the conv stem."""
    learned_grid: Triple | None = None
    """``pos=learned``: the largest token grid (gz, gy, gx) the embeddings cover."""
    kind: Literal["vit"] = "vit"
    """Tower marker (``ResNet3dConfig`` has ``kind="resnet"``): which config a saved dict is."""

    def __post_init__(self) -> None:
        self.patch = as_triple(self.patch, "patch")
        if self.mlp not in ("gelu", "swiglu"):
            raise ValueError(f"mlp must be 'gelu' or 'swiglu', got {self.mlp!r}")
        if self.pos not in ("rope", "learned", "none"):
            raise ValueError(f"pos must be 'rope', 'learned' or 'none', got {self.pos!r}")
        if self.mlp_ratio is None:
            self.mlp_ratio = 4.0 if self.mlp == "gelu" else 8.0 / 3.0
        if min(self.in_chans, self.width, self.depth, self.heads, self.stem_width) < 1 or self.mlp_ratio <= 0:
            raise ValueError("in_chans, width, depth, heads, stem_width and mlp_ratio must be positive")
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}")
        if not 0.0 <= self.drop_path < 1.0:
            raise ValueError(f"drop_path must be in [0, 1), got {self.drop_path}")
        if self.stem not in ("none", "conv") or (self.stem == "conv" and any(p % 2 for p in self.patch)):
            raise ValueError(f"stem must be 'none' or 'conv' (conv needs even patch sizes), got {self.stem!r}")
        if self.rope_split is not None:
            self.rope_split = as_triple(self.rope_split, "rope_split")
        if self.pos == "rope":
            rope_split(self.width // self.heads, self.rope_fraction)  # raises on a too small head
            if self.rope_base <= 1.0:
                raise ValueError(f"rope_base must be > 1, got {self.rope_base}")
        if self.pos == "learned" and self.learned_grid is None:
            raise ValueError("pos='learned' needs learned_grid (the largest token grid)")
        if self.learned_grid is not None:
            self.learned_grid = as_triple(self.learned_grid, "learned_grid")


SIZES: dict[str, dict] = {
    "debug": dict(width=48, depth=2, heads=3, patch=(8, 16, 16)),
    "small": dict(width=396, depth=12, heads=6, patch=(16, 16, 16)),
    "base": dict(width=792, depth=12, heads=12, patch=(16, 16, 16)),
    "large": dict(width=1056, depth=24, heads=16, patch=(16, 16, 16)),
    "primus-m": dict(width=864, depth=16, heads=12, patch=(8, 8, 8), mlp="swiglu", rope_base=10000.0,
                     rope_split=(24, 24, 24), layerscale=0.1, drop_path=0.2, sub_norms=True, k_bias=False,
                     eva_init=True),
}
"""Named sizes: SigVLP's small/base/large (authors' code), COLIPRI's Primus-M, and a tiny debug one.

Primus-M is the authors' tower (``colipri`` on PyPI: ``dynamic_network_architectures``' Primus over timm's
Eva blocks), checked weight for weight in ``tests/test_colipri_equivalence.py``: SwiGLU with sub-LayerNorms,
no key bias, LayerScale 0.1, drop-path 0.2, and timm's ``RotaryEmbeddingCat`` over all 72 dims of each
head (12 frequency bands base 10000 per axis: 24 + 24 + 24 dims)."""


def list_sizes() -> list[str]:
    """Names accepted by :func:`vit_config`."""
    return list(SIZES)


def vit_config(name: str, **overrides) -> ViT3dConfig:
    """The config of a named size, with any field overridden (e.g. ``vit_config("small", pos="learned", ...)``)."""
    if name not in SIZES:
        raise ValueError(f"unknown ViT size {name!r}; known: {', '.join(SIZES)}")
    known = {f.name for f in fields(ViT3dConfig)}
    if unknown := set(overrides) - known:
        raise ValueError(f"unknown ViT3dConfig fields: {sorted(unknown)}")
    return ViT3dConfig(**{"size": name, **SIZES[name], **overrides})


def create_vision_tower(cfg) -> nn.Module:
    """The tower a vision config describes: :class:`VisionTransformer3d` for a :class:`ViT3dConfig`,
    MONAI's 3D ResNet (:mod:`ctvlp.models.resnet3d`) for a ``ResNet3dConfig``; both return the same dict."""
    if getattr(cfg, "kind", "vit") == "ctvit":
        return CTViT(cfg)
    if getattr(cfg, "kind", "vit") == "resnet":
        return create_resnet_tower(cfg)
    return VisionTransformer3d(cfg)


class VisionTransformer3d(nn.Module):
    """Patch embedding -> [RoPE | learned | no positions] -> pre-norm blocks -> final LayerNorm."""

    def __init__(self, cfg: ViT3dConfig):
        super().__init__()
        self.cfg, self.width = cfg, cfg.width
        self.patch_embed = PatchEmbed3d(cfg.patch, cfg.in_chans, cfg.width, cfg.stem, cfg.stem_width)
        head_dim = cfg.width // cfg.heads
        self.rope = Rope3d(head_dim, cfg.rope_base, cfg.rope_fraction, cfg.rope_split) if cfg.pos == "rope" else None
        self.pos_embed = nn.Parameter(torch.zeros(1, *cfg.learned_grid, cfg.width)) if cfg.pos == "learned" else None
        rates = [cfg.drop_path * i / max(cfg.depth - 1, 1) for i in range(cfg.depth)]
        self.blocks = nn.ModuleList(Block(cfg.width, cfg.heads, cfg.mlp, cfg.mlp_ratio, cfg.layerscale, rate,
                                          sub_norms=cfg.sub_norms, k_bias=cfg.k_bias) for rate in rates)
        self.norm = nn.LayerNorm(cfg.width)
        self.grad_checkpointing = False  # set_grad_checkpointing (TrainConfig.grad_checkpointing) turns it on
        self.apply(init_linear)
        if self.pos_embed is not None:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if cfg.eva_init:
            self._eva_init()

    @torch.no_grad()
    def _eva_init(self) -> None:
        """Eva's depth rescaling of the residual branches' output weights, Primus' He-normal patch conv."""
        for i, block in enumerate(self.blocks):
            block.attn.proj.weight.div_(math.sqrt(2.0 * (i + 1)))
            (block.mlp.fc3 if hasattr(block.mlp, "fc3") else block.mlp.fc2).weight.div_(math.sqrt(2.0 * (i + 1)))
        for conv in self.patch_embed.modules():
            if isinstance(conv, nn.Conv3d):
                nn.init.kaiming_normal_(conv.weight, a=1e-2)
                nn.init.zeros_(conv.bias)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def no_weight_decay(self) -> set[str]:
        """Parameter names that should not be weight-decayed (timm's convention)."""
        return {"pos_embed"} if self.pos_embed is not None else set()

    def forward_features(self, x: torch.Tensor, slice_mask: torch.Tensor | None = None,
                         z_offset: int = 0) -> tuple[torch.Tensor, torch.Tensor, Triple]:
        """x (B, C, D, H, W), slice_mask (B, D) -> tokens (B, N, C) after the final norm, token_mask (B, N),
        grid (gz, gy, gx). ``z_offset``: patch index of the first z-patch (RoPE: no effect on the output
        beyond rounding, since scores depend on offsets only; learned: where the crop starts)."""
        x, slice_mask = self._pad_depth(x, slice_mask)
        tokens = self.patch_embed(x)  # (B, C, gz, gy, gx)
        grid = tuple(tokens.shape[2:])
        tokens = tokens.flatten(2).transpose(1, 2)  # (B, N, C)
        token_mask = self._token_mask(slice_mask, grid)
        key_mask = None if bool(token_mask.all()) else token_mask
        rope = None
        if self.rope is not None:
            rope = self.rope(grid, z_offset, tokens.device)
        elif self.pos_embed is not None:
            tokens = tokens + self._learned_positions(grid, z_offset)
        for block in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                tokens = checkpoint(block, tokens, rope, key_mask, use_reentrant=False)
            else:
                tokens = block(tokens, rope, key_mask)
        return self.norm(tokens), token_mask, grid

    def forward(self, x: torch.Tensor, slice_mask: torch.Tensor | None = None, z_offset: int = 0) -> dict:
        """``forward_features`` as a dict plus ``pooled`` (B, C): the mean over valid tokens."""
        tokens, token_mask, grid = self.forward_features(x, slice_mask, z_offset)
        return {"tokens": tokens, "token_mask": token_mask, "grid": grid, "pooled": masked_mean(tokens, token_mask)}

    def forward_visible(self, x: torch.Tensor, keep_idx: torch.Tensor, slice_mask: torch.Tensor | None = None,
                        z_offset: int = 0) -> dict:
        """The encoder pass of a masked autoencoder: only the tokens ``keep_idx`` go through the blocks.

        x (B, C, D, H, W), keep_idx (B, N_keep) long indices into the z-major token grid (as
        ``ctvlp.models.mae.random_masking`` returns them), slice_mask (B, D) or None. The whole volume is
        patch-embedded (a conv stem therefore runs on every voxel, masked or not), then the kept tokens
        are gathered and get the positions of their own (z, y, x) patch index: RoPE rows of the grid's
        cos/sin tables gathered by ``keep_idx`` (B, N_keep, r), learned embedding rows gathered likewise,
        or nothing. Attention runs among the kept tokens only, with kept padding tokens as non-keys.
        With ``keep_idx`` = all tokens this is ``forward_features``. Returns ``tokens`` (B, N_keep, C)
        after the final norm, ``token_mask`` (B, N_keep) (validity of the kept tokens), ``grid``, ``keep_idx``.
        """
        x, slice_mask = self._pad_depth(x, slice_mask)
        tokens = self.patch_embed(x)  # (B, C, gz, gy, gx)
        grid = tuple(tokens.shape[2:])
        tokens = tokens.flatten(2).transpose(1, 2)  # (B, N, C)
        b, n, c = tokens.shape
        if keep_idx.dim() != 2 or keep_idx.shape[0] != b or keep_idx.shape[1] < 1 or keep_idx.is_floating_point():
            raise ValueError(f"keep_idx must be integer (B, N_keep) = ({b}, >= 1), got {keep_idx.dtype} "
                             f"{tuple(keep_idx.shape)}")
        keep_idx = keep_idx.to(device=tokens.device, dtype=torch.long)
        if int(keep_idx.min()) < 0 or int(keep_idx.max()) >= n:
            raise ValueError(f"keep_idx must index the {n} tokens of grid {grid}")
        tokens = tokens.gather(1, keep_idx[..., None].expand(-1, -1, c))  # (B, N_keep, C)
        token_mask = self._token_mask(slice_mask, grid).gather(1, keep_idx)  # (B, N_keep)
        key_mask = None
        if not bool(token_mask.all()):
            if not bool(token_mask.any(dim=1).all()):
                raise ValueError("keep_idx keeps only padding tokens in at least one sample")
            key_mask = token_mask
        rope = None
        if self.rope is not None:
            cos, sin = self.rope(grid, z_offset, tokens.device)  # (N, r) each
            rope = cos[keep_idx], sin[keep_idx]  # (B, N_keep, r) each: each kept token's own rotation
        elif self.pos_embed is not None:
            pos = self._learned_positions(grid, z_offset).expand(b, -1, -1)  # (B, N, C)
            tokens = tokens + pos.gather(1, keep_idx[..., None].expand(-1, -1, c))  # (B, N_keep, C)
        for block in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                tokens = checkpoint(block, tokens, rope, key_mask, use_reentrant=False)
            else:
                tokens = block(tokens, rope, key_mask)
        return {"tokens": self.norm(tokens), "token_mask": token_mask, "grid": grid, "keep_idx": keep_idx}

    def _pad_depth(self, x: torch.Tensor, slice_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Check shapes; repeat the last slice up to a multiple of pz (added slices invalid)."""
        pz, py, px = self.cfg.patch
        if x.dim() != 5 or x.shape[1] != self.cfg.in_chans or x.shape[2] < 1:
            raise ValueError(f"expected x (B, {self.cfg.in_chans}, D, H, W) with D >= 1, got {tuple(x.shape)}")
        b, _, d, h, w = x.shape
        if h % py or w % px:
            raise ValueError(f"in-plane size (H, W) = ({h}, {w}) is not divisible by the patch ({py}, {px})")
        if slice_mask is None:
            slice_mask = torch.ones(b, d, dtype=torch.bool, device=x.device)
        elif tuple(slice_mask.shape) != (b, d):
            raise ValueError(f"slice_mask must be (B, D) = ({b}, {d}), got {tuple(slice_mask.shape)}")
        slice_mask = slice_mask.to(device=x.device, dtype=torch.bool)
        if pad := -d % pz:
            x = torch.cat((x, x[:, :, -1:].expand(-1, -1, pad, -1, -1)), dim=2)  # (B, C, D + pad, H, W)
            slice_mask = torch.cat((slice_mask, slice_mask.new_zeros(b, pad)), dim=1)  # (B, D + pad)
        return x, slice_mask

    def _token_mask(self, slice_mask: torch.Tensor, grid: Triple) -> torch.Tensor:
        """(B, D) real slices -> (B, N) valid tokens: a z-patch counts if any of its slices is real."""
        gz, gy, gx = grid
        valid_z = slice_mask.view(slice_mask.shape[0], gz, -1).any(dim=-1)  # (B, gz)
        if not bool(valid_z.any(dim=1).all()):
            raise ValueError("slice_mask marks no real slice in at least one sample")
        return valid_z[:, :, None].expand(-1, -1, gy * gx).reshape(-1, gz * gy * gx)  # (B, N)

    def _learned_positions(self, grid: Triple, z_offset: int) -> torch.Tensor:
        """The learned embeddings of the input's grid, cropped from (z_offset, 0, 0): (1, N, C)."""
        gz, gy, gx = grid
        mz, my, mx = self.cfg.learned_grid
        if z_offset < 0 or z_offset + gz > mz or gy > my or gx > mx:
            raise ValueError(f"token grid {grid} at z_offset {z_offset} exceeds learned_grid {self.cfg.learned_grid}")
        return self.pos_embed[:, z_offset:z_offset + gz, :gy, :gx].reshape(1, gz * gy * gx, -1)  # (1, N, C)
