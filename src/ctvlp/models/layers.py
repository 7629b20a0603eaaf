"""Building blocks of the 3D ViT: patch embedding, attention with 3D RoPE, MLP/SwiGLU, pre-norm block.

The Eva options (timm's ``EvaBlock``, used by COLIPRI's Primus-M): ``k_bias=False`` (no key bias: with
RoPE a key bias is not a constant shift of the scores), and sub-LayerNorms (``scale_attn_inner``: a
LayerNorm on the attention output before its projection; ``scale_mlp``: a LayerNorm on the hidden
activations before the MLP's output projection)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ctvlp.models.rope import apply_rope

Triple = tuple[int, int, int]


def as_triple(value, name: str) -> Triple:
    """An int or three ints -> (z, y, x) positive ints; ValueError naming ``name`` otherwise."""
    if isinstance(value, int):
        value = (value,) * 3
    value = tuple(int(v) for v in value)
    if len(value) != 3 or min(value) < 1:
        raise ValueError(f"{name} must be three positive ints (z, y, x), got {value}")
    return value


def init_linear(module: nn.Module) -> None:
    """timm's ViT init (``model.apply(init_linear)``): truncated normal (std 0.02) Linear weights, zero biases."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class LayerNorm3d(nn.LayerNorm):
    """LayerNorm over the channels of each voxel of (B, C, D, H, W): no statistics cross voxels, so
    padding slices cannot change the normalisation of real ones (unlike Batch/Instance/GroupNorm)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.movedim(1, -1)).movedim(-1, 1)  # (B, C, D, H, W)


class PatchEmbed3d(nn.Module):
    """(B, C, D, H, W) -> (B, width, gz, gy, gx) by a Conv3d with kernel = stride = patch (pz, py, px).

    ``stem="conv"`` puts two 3x3x3 conv + channel LayerNorm + GELU layers before the patch conv: the
    first with stride 2 (to 1/8 of the voxels, which keeps the stem's activations affordable at
    256 x 256 in-plane), the second with stride 1; the patch conv then has kernel = stride = patch / 2,
    so the token grid is unchanged. The overlapping 3x3x3 kernels give small structures (nodules,
    vessel walls) a non-linear detector before the linear patch projection. Needs even patch sizes;
    the stem's convs see one neighbouring slice across a patch border.
    """

    def __init__(self, patch: Triple, in_chans: int, width: int, stem: str = "none", stem_width: int = 32):
        super().__init__()
        self.patch = tuple(patch)
        if stem == "none":
            self.stem = nn.Identity()
            self.proj = nn.Conv3d(in_chans, width, kernel_size=self.patch, stride=self.patch)
        elif stem == "conv":
            if any(p % 2 for p in self.patch):
                raise ValueError(f"stem='conv' needs even patch sizes, got {self.patch}")
            self.stem = nn.Sequential(
                nn.Conv3d(in_chans, stem_width, 3, stride=2, padding=1), LayerNorm3d(stem_width), nn.GELU(),
                nn.Conv3d(stem_width, stem_width, 3, stride=1, padding=1), LayerNorm3d(stem_width), nn.GELU())
            half = tuple(p // 2 for p in self.patch)
            self.proj = nn.Conv3d(stem_width, width, kernel_size=half, stride=half)
        else:
            raise ValueError(f"stem must be 'none' or 'conv', got {stem!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.stem(x))  # (B, width, gz, gy, gx)


def patchify3d(volume: torch.Tensor, patch: Triple) -> torch.Tensor:
    """(B, C, D, H, W) -> (B, N, pz * py * px * C), N = (D/pz)(H/py)(W/px) z-major; each patch's values in
    (z, y, x, C) order. D, H, W must be multiples of the patch (pad the depth first, as the ViT does)."""
    pz, py, px = patch
    if volume.ndim != 5:
        raise ValueError(f"expected a volume (B, C, D, H, W), got {tuple(volume.shape)}")
    b, c, d, h, w = volume.shape
    if d % pz or h % py or w % px:
        raise ValueError(f"volume (D, H, W) = ({d}, {h}, {w}) is not divisible by the patch {tuple(patch)}")
    gz, gy, gx = d // pz, h // py, w // px
    x = volume.reshape(b, c, gz, pz, gy, py, gx, px)
    x = x.permute(0, 2, 4, 6, 3, 5, 7, 1)  # (B, gz, gy, gx, pz, py, px, C)
    return x.reshape(b, gz * gy * gx, pz * py * px * c)


def unpatchify3d(patches: torch.Tensor, patch: Triple, grid: Triple) -> torch.Tensor:
    """Inverse of :func:`patchify3d`: (B, N, pz * py * px * C) with N = gz * gy * gx -> (B, C, D, H, W)."""
    pz, py, px = patch
    gz, gy, gx = grid
    if patches.ndim != 3 or patches.shape[1] != gz * gy * gx or patches.shape[2] % (pz * py * px):
        raise ValueError(f"expected patches (B, N = {gz * gy * gx}, pz * py * px * C) for patch {tuple(patch)} "
                         f"and grid {tuple(grid)}; got {tuple(patches.shape)}")
    b, c = patches.shape[0], patches.shape[2] // (pz * py * px)
    x = patches.reshape(b, gz, gy, gx, pz, py, px, c)
    x = x.permute(0, 7, 1, 4, 2, 5, 3, 6)  # (B, C, gz, pz, gy, py, gx, px)
    return x.reshape(b, c, gz * pz, gy * py, gx * px)


class Attention(nn.Module):
    """Multi-head self-attention; RoPE on q and k; ``F.scaled_dot_product_attention`` (flash/efficient
    kernels on GPU). ``key_mask`` (B, N) bool, True on tokens that may be attended to, or None.

    ``k_bias=False`` (with ``qkv_bias``): q and v have biases (``q_bias``, ``v_bias``), k has none, as
    in timm's ``EvaAttention``. ``inner_norm``: a LayerNorm over the heads' concatenated output before
    ``proj`` (Eva's ``scale_attn_inner``)."""

    def __init__(self, width: int, heads: int, qkv_bias: bool = True, k_bias: bool = True,
                 inner_norm: bool = False):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads, self.head_dim = heads, width // heads
        split_bias = qkv_bias and not k_bias
        self.qkv = nn.Linear(width, 3 * width, bias=qkv_bias and not split_bias)
        if split_bias:
            self.q_bias, self.v_bias = nn.Parameter(torch.zeros(width)), nn.Parameter(torch.zeros(width))
        self.norm = nn.LayerNorm(width) if inner_norm else nn.Identity()
        self.proj = nn.Linear(width, width)

    def _qkv(self, x: torch.Tensor) -> torch.Tensor:
        if not hasattr(self, "q_bias"):
            return self.qkv(x)
        bias = torch.cat((self.q_bias, torch.zeros_like(self.q_bias), self.v_bias))  # (3C,): no key bias
        return F.linear(x, self.qkv.weight, bias)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None,
                key_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self._qkv(x).view(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)  # 3 x (B, h, N, d)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        attn_mask = None if key_mask is None else key_mask[:, None, None, :]  # (B, 1, 1, N)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (B, h, N, d)
        return self.proj(self.norm(out.transpose(1, 2).reshape(b, n, c)))  # (B, N, C)


class Mlp(nn.Module):
    """Linear -> GELU -> [LayerNorm] -> Linear (``inner_norm``: Eva's ``scale_mlp``)."""

    def __init__(self, width: int, hidden: int, inner_norm: bool = False):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width)
        self.norm = nn.LayerNorm(hidden) if inner_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.norm(self.act(self.fc1(x))))


class SwiGLU(nn.Module):
    """out = W3 [LN] (SiLU(W1 x) * W2 x) (Shazeer 2020); hidden ~ 8/3 width keeps the MLP's parameter count.
    ``inner_norm``: a LayerNorm on the gated hidden activations (Eva's ``scale_mlp``)."""

    def __init__(self, width: int, hidden: int, inner_norm: bool = False):
        super().__init__()
        self.fc12, self.fc3 = nn.Linear(width, 2 * hidden), nn.Linear(hidden, width)
        self.norm = nn.LayerNorm(hidden) if inner_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.fc12(x).chunk(2, dim=-1)  # 2 x (B, N, hidden)
        return self.fc3(self.norm(F.silu(gate) * value))


class LayerScale(nn.Module):
    """Per-channel learnable scale of a residual branch (CaiT), initialised to ``init``."""

    def __init__(self, width: int, init: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((width,), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class DropPath(nn.Module):
    """Stochastic depth: zero a sample's residual branch with probability p in training, scale by 1/(1-p)."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop-path probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1.0 - self.p)  # (B, 1, 1)
        return x * keep / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Block(nn.Module):
    """Pre-norm transformer block: x + DropPath(LS(Attn(LN x))), then x + DropPath(LS(MLP(LN x))).
    ``sub_norms``: the attention and the MLP each get their inner LayerNorm (timm Eva's
    ``scale_attn_inner`` and ``scale_mlp``); ``k_bias=False``: no key bias."""

    def __init__(self, width: int, heads: int, mlp: str = "gelu", mlp_ratio: float = 4.0,
                 layerscale: float | None = None, drop_path: float = 0.0, sub_norms: bool = False,
                 k_bias: bool = True):
        super().__init__()
        hidden = round(width * mlp_ratio)
        self.norm1, self.attn = nn.LayerNorm(width), Attention(width, heads, k_bias=k_bias, inner_norm=sub_norms)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = {"gelu": Mlp, "swiglu": SwiGLU}[mlp](width, hidden, inner_norm=sub_norms)
        self.ls1 = nn.Identity() if layerscale is None else LayerScale(width, layerscale)
        self.ls2 = nn.Identity() if layerscale is None else LayerScale(width, layerscale)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None,
                key_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.drop_path(self.ls1(self.attn(self.norm1(x), rope, key_mask)))
        return x + self.drop_path(self.ls2(self.mlp(self.norm2(x))))
