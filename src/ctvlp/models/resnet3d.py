"""A 3D ResNet vision tower (MONAI's ``monai.networks.nets.ResNet``) with the ViT tower's contract.

Same call and output as :class:`~ctvlp.models.vit3d.VisionTransformer3d`: ``forward(x (B, C, D, H, W),
slice_mask (B, D) bool | None, z_offset)`` -> ``{"tokens" (B, N, C), "token_mask" (B, N) bool,
"grid" (gz, gy, gx), "pooled" (B, C)}``; tokens are the last stage's feature map flattened z-major
(z, y, x), optionally LayerNorm-ed over channels like the ViT's final norm, and ``pooled`` is their
mean over valid tokens. ``.width`` is the last stage's channels (512 for depth 10/18/34, 2048 for 50,
scaled by ``widths``).

Geometry: MONAI's stem conv (``stem_kernel``, ``stem_stride``), an optional 3x3x3/2 max pool and four
stages, the last three with stride 2; every layer pads so that an axis of size n becomes ceil(n / s).
The total stride per axis is ``stem_stride * (2 if max_pool) * 8`` and the grid is ceil((D, H, W) /
stride), so any input size works, including a single slice (zero padding at the borders).
A token row z covers the input slices [z * sz, (z + 1) * sz); it is valid if one of them is real.

Unlike the ViT, padded slices are not invisible: convolutions near the padding see it, and with
``norm="batch"`` the padding (and the other samples of the batch) enter the normalisation
statistics. ``norm="group"`` swaps every BatchNorm for a GroupNorm after MONAI builds the network
(per-sample statistics; MONAI's own ``norm`` argument reaches only the stem, its stages always use
BatchNorm). Downsampling shortcuts are MONAI's type ``B`` (1x1x1 conv + norm); its type ``A`` detaches
the shortcut (``out.data``), so it is not offered. ``z_offset`` is accepted for the common signature and
ignored (a CNN has no positions).

MONAI is imported when a tower is built, not with this module, so the config costs nothing to import.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ctvlp.models.heads import masked_mean
from ctvlp.models.layers import Triple, as_triple


DEPTHS: dict[int, tuple[str, list[int]]] = {
    10: ("basic", [1, 1, 1, 1]),
    18: ("basic", [2, 2, 2, 2]),
    34: ("basic", [3, 4, 6, 3]),
    50: ("bottleneck", [3, 4, 6, 3]),
}
"""Block type and blocks per stage of MONAI's ``resnet10`` .. ``resnet50`` (a bottleneck block outputs
4x its planes)."""


@dataclass
class ResNet3dConfig:
    """Architecture of a :class:`ResNetTower3d` (defaults: MONAI's resnet18 with a z-preserving stem)."""

    kind: Literal["resnet"] = "resnet"
    """Marker that tells this config apart from a ``ViT3dConfig`` in a saved or overridden config."""
    depth: int = 18
    """10, 18, 34 or 50 (MONAI's resnet10 .. resnet50)."""
    in_chans: int = 1
    """Input channels (1: windowed HU)."""
    widths: tuple[int, int, int, int] = (64, 128, 256, 512)
    """Planes of the four stages (MONAI's ``block_inplanes``; the last is multiplied by 4 for depth 50)."""
    stem_kernel: Triple = (7, 7, 7)
    """Kernel (z, y, x) of the stem conv (MONAI's ``conv1_t_size``); odd sizes keep the ceil(n / s) rule."""
    stem_stride: Triple = (1, 2, 2)
    """Stride (z, y, x) of the stem conv (MONAI's ``conv1_t_stride``); z 1 keeps thin, thick-slice chunks."""
    max_pool: bool = True
    """The 3x3x3 stride-2 max pool after the stem (MONAI's ``not no_max_pool``)."""
    norm: Literal["batch", "group"] = "batch"
    """``batch``: MONAI's BatchNorm3d (in train mode a batch of 1 whose last map is one voxel fails);
    ``group``: every BatchNorm replaced by a GroupNorm of up to 32 groups (per-sample statistics)."""
    final_norm: bool = True
    """LayerNorm over the channels of the output tokens (the ViT ends with one too)."""

    def __post_init__(self) -> None:
        if self.kind != "resnet":
            raise ValueError(f"kind must be 'resnet', got {self.kind!r}")
        if self.depth not in DEPTHS:
            raise ValueError(f"depth must be one of {sorted(DEPTHS)} (MONAI's resnet10..resnet50), got {self.depth}")
        if self.in_chans < 1:
            raise ValueError(f"in_chans must be positive, got {self.in_chans}")
        widths = tuple(int(w) for w in self.widths)
        if len(widths) != 4 or min(widths) < 1:
            raise ValueError(f"widths must be four positive ints (one per stage), got {self.widths}")
        self.widths = widths
        self.stem_kernel = as_triple(self.stem_kernel, "stem_kernel")
        if any(k % 2 == 0 for k in self.stem_kernel):
            raise ValueError(f"stem_kernel must be odd (the padding k // 2 keeps ceil(n / s)), got {self.stem_kernel}")
        self.stem_stride = as_triple(self.stem_stride, "stem_stride")
        if self.norm not in ("batch", "group"):
            raise ValueError(f"norm must be 'batch' or 'group', got {self.norm!r}")

    @property
    def stride(self) -> Triple:
        """Total stride (z, y, x) from the input to the output tokens."""
        pool = 2 if self.max_pool else 1
        return tuple(s * pool * 8 for s in self.stem_stride)

    @property
    def width(self) -> int:
        """Channels C of the output tokens."""
        return self.widths[3] * (4 if DEPTHS[self.depth][0] == "bottleneck" else 1)


def resnet_config(depth: int = 18, **overrides) -> ResNet3dConfig:
    """A :class:`ResNet3dConfig` of a MONAI depth with any field overridden."""
    return ResNet3dConfig(depth=depth, **overrides)


def create_resnet_tower(cfg: ResNet3dConfig) -> ResNetTower3d:
    return ResNetTower3d(cfg)


class ResNetTower3d(nn.Module):
    """MONAI ResNet (stem, [max pool], four stages; no global pool, no fc) -> tokens (B, N, C)."""

    def __init__(self, cfg: ResNet3dConfig):
        from monai.networks.nets.resnet import ResNet  # here: importing MONAI takes seconds

        super().__init__()
        self.cfg, self.width = cfg, cfg.width
        block, layers = DEPTHS[cfg.depth]
        net = ResNet(block, layers, list(cfg.widths), spatial_dims=3, n_input_channels=cfg.in_chans,
                     conv1_t_size=cfg.stem_kernel, conv1_t_stride=cfg.stem_stride, no_max_pool=not cfg.max_pool,
                     shortcut_type="B", feed_forward=False)
        if cfg.norm == "group":
            _batch_to_group_norm(net)
        # MONAI's modules, without its global average pool (the tokens are the output here).
        self.stem = nn.Sequential(net.conv1, net.bn1, net.act, net.maxpool if cfg.max_pool else nn.Identity())
        self.stages = nn.ModuleList([net.layer1, net.layer2, net.layer3, net.layer4])
        self.norm = nn.LayerNorm(self.width) if cfg.final_norm else nn.Identity()
        self.grad_checkpointing = False  # set_grad_checkpointing (TrainConfig.grad_checkpointing) turns it on

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each stage in the backward pass. With ``norm="batch"`` in train mode the recompute
        updates the BatchNorm running statistics a second time (outputs and gradients are unchanged)."""
        self.grad_checkpointing = enable

    def no_weight_decay(self) -> set[str]:
        """Parameter names that should not be weight-decayed (timm's convention): none here."""
        return set()

    def forward_features(self, x: torch.Tensor, slice_mask: torch.Tensor | None = None,
                         z_offset: int = 0) -> tuple[torch.Tensor, torch.Tensor, Triple]:
        """x (B, C, D, H, W), slice_mask (B, D) -> tokens (B, N, C), token_mask (B, N), grid (gz, gy, gx).
        ``z_offset`` is ignored (no positions)."""
        if x.dim() != 5 or x.shape[1] != self.cfg.in_chans or min(x.shape[2:]) < 1:
            raise ValueError(f"expected x (B, {self.cfg.in_chans}, D, H, W) with D, H, W >= 1, got {tuple(x.shape)}")
        b, _, d, h, w = x.shape
        if slice_mask is None:
            slice_mask = torch.ones(b, d, dtype=torch.bool, device=x.device)
        elif tuple(slice_mask.shape) != (b, d):
            raise ValueError(f"slice_mask must be (B, D) = ({b}, {d}), got {tuple(slice_mask.shape)}")
        slice_mask = slice_mask.to(device=x.device, dtype=torch.bool)
        feats = self.stem(x)
        for stage in self.stages:
            if self.grad_checkpointing and torch.is_grad_enabled():
                feats = checkpoint(stage, feats, use_reentrant=False)
            else:
                feats = stage(feats)
        grid = tuple(feats.shape[2:])  # (gz, gy, gx)
        expected = tuple(math.ceil(n / s) for n, s in zip((d, h, w), self.cfg.stride))
        if grid != expected:  # the ceil(n / s) rule of the docstring; a MONAI change would break the mask
            raise RuntimeError(f"feature grid {grid} is not ceil({(d, h, w)} / {self.cfg.stride}) = {expected}")
        tokens = self.norm(feats.flatten(2).transpose(1, 2))  # (B, N, C), z-major
        return tokens, self._token_mask(slice_mask, grid), grid

    def forward(self, x: torch.Tensor, slice_mask: torch.Tensor | None = None, z_offset: int = 0) -> dict:
        """``forward_features`` as a dict plus ``pooled`` (B, C): the mean over valid tokens."""
        tokens, token_mask, grid = self.forward_features(x, slice_mask, z_offset)
        return {"tokens": tokens, "token_mask": token_mask, "grid": grid, "pooled": masked_mean(tokens, token_mask)}

    def _token_mask(self, slice_mask: torch.Tensor, grid: Triple) -> torch.Tensor:
        """(B, D) real slices -> (B, N) valid tokens: row z covers slices [z * sz, (z + 1) * sz) of the input
        (the last row fewer); it counts if any of them is real."""
        gz, gy, gx = grid
        b, d = slice_mask.shape
        sz = self.cfg.stride[0]
        padded = torch.cat((slice_mask, slice_mask.new_zeros(b, gz * sz - d)), dim=1)  # (B, gz * sz)
        valid_z = padded.view(b, gz, sz).any(dim=-1)  # (B, gz)
        if not bool(valid_z.any(dim=1).all()):
            raise ValueError("slice_mask marks no real slice in at least one sample")
        return valid_z[:, :, None].expand(-1, -1, gy * gx).reshape(b, gz * gy * gx)  # (B, N)


def _batch_to_group_norm(module: nn.Module) -> None:
    """Replace every BatchNorm3d below ``module`` by a GroupNorm (weight 1, bias 0 like MONAI's init) with
    the most groups that divide C, at most 32 and with at least 2 channels each (C >= 2): a group of one
    channel is InstanceNorm, which cannot train on the 1-voxel maps small inputs reach."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm3d):
            c = child.num_features
            groups = max(g for g in range(1, min(32, max(c // 2, 1)) + 1) if c % g == 0)
            setattr(module, name, nn.GroupNorm(groups, c, eps=child.eps))
        else:
            _batch_to_group_norm(child)
