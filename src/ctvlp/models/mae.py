"""Masked-autoencoder decoder and training step for COLIPRI's image-only batches (He et al. 2022, in 3D).

One MAE step: mask 75 % of the tokens at random (:func:`random_masking`), encode only
the visible ones (``VisionTransformer3d.forward_visible``: the blocks see N/4 tokens, which is what
makes the step cheap), then :class:`MaeDecoder`

    visible tokens (B, N_keep, C_enc) -> Linear -> (B, N_keep, C_dec)
    -> scatter them among copies of one learned mask token at their original z-major indices (B, N, C_dec)
    -> a few pre-norm blocks (``ctvlp.models.layers.Block``) with 3D RoPE over the full grid
    -> LayerNorm -> Linear -> (B, N, pz * py * px * C) patch values,

and ``MaeLoss`` regresses the normalised voxels of the masked patches only.

Decoder positions: 3D RoPE from the same ``Rope3d`` class as the encoder, not fixed sin-cos absolute
embeddings (MAE's choice). Every mask token starts as the same vector, so its prediction can only come
from where it sits relative to the visible tokens; RoPE gives exactly that (attention scores depend
on 3D offsets), needs no maximal grid (any depth works, like the encoder) and adds no parameters.
The decoder uses RoPE whatever the encoder's ``pos`` is.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ctvlp.models.layers import Block, Triple, init_linear, patchify3d
from ctvlp.models.rope import Rope3d, rope_split


def random_masking(batch: int, num_tokens: int, ratio: float, generator: torch.Generator | None = None,
                   device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """MAE's per-sample random masking by argsort of uniform noise.

    Returns ``keep_idx`` (B, N_keep) long, the kept (visible) token indices of each sample in ascending
    order (gather the encoder's input with it), N_keep = max(1, int(N * (1 - ratio))), and ``mask``
    (B, N) bool, True on masked tokens (where :func:`mae_loss` is computed). ``generator`` must live on
    ``device`` (CPU by default).
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"mask ratio must be in [0, 1), got {ratio}")
    if batch < 1 or num_tokens < 1:
        raise ValueError(f"need batch >= 1 and num_tokens >= 1, got ({batch}, {num_tokens})")
    keep = max(1, int(num_tokens * (1.0 - ratio)))
    noise = torch.rand(batch, num_tokens, generator=generator, device=device)  # (B, N)
    keep_idx = noise.argsort(dim=1)[:, :keep].sort(dim=1).values  # (B, N_keep)
    mask = torch.ones(batch, num_tokens, dtype=torch.bool, device=noise.device)  # (B, N)
    mask.scatter_(1, keep_idx, False)
    return keep_idx, mask


@dataclass
class MaeDecoderConfig:
    """Architecture of a :class:`MaeDecoder` (MAE's decoder is 512 wide, 8 blocks; 3D CT uses a lighter one)."""

    width: int = 256
    """Decoder token dimension."""
    depth: int = 2
    """Number of pre-norm blocks."""
    heads: int = 8
    """Attention heads (width must be divisible by heads; head_dim >= 6 for 3D RoPE)."""
    mlp_ratio: float = 4.0
    """Hidden width / width of each block's GELU MLP."""
    rope_base: float = 1000.0
    """RoPE base, as the encoder's ``rope_base``."""

    def __post_init__(self) -> None:
        if min(self.width, self.depth, self.heads) < 1 or self.mlp_ratio <= 0:
            raise ValueError("width, depth, heads and mlp_ratio must be positive")
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}")
        rope_split(self.width // self.heads)  # raises on a head too small for 3D RoPE
        if self.rope_base <= 1.0:
            raise ValueError(f"rope_base must be > 1, got {self.rope_base}")


class MaeDecoder(nn.Module):
    """Light transformer decoder: visible encoder tokens + mask tokens -> patch values of every token."""

    def __init__(self, cfg: MaeDecoderConfig, encoder_width: int, patch: Triple, in_chans: int = 1):
        super().__init__()
        if encoder_width < 1 or in_chans < 1 or len(tuple(patch)) != 3 or min(patch) < 1:
            raise ValueError(f"need encoder_width, in_chans >= 1 and a patch of 3 positive ints; got "
                             f"{encoder_width}, {in_chans}, {patch}")
        self.cfg, self.patch, self.in_chans = cfg, tuple(int(p) for p in patch), in_chans
        self.patch_dim = self.patch[0] * self.patch[1] * self.patch[2] * in_chans  # P
        self.embed = nn.Linear(encoder_width, cfg.width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, cfg.width))
        self.rope = Rope3d(cfg.width // cfg.heads, cfg.rope_base)
        self.blocks = nn.ModuleList(Block(cfg.width, cfg.heads, "gelu", cfg.mlp_ratio) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.width)
        self.head = nn.Linear(cfg.width, self.patch_dim)
        self.apply(init_linear)
        nn.init.normal_(self.mask_token, std=0.02)

    @classmethod
    def for_tower(cls, cfg: MaeDecoderConfig, vision_tower: nn.Module) -> "MaeDecoder":
        """A decoder matching a ``VisionTransformer3d``'s width, patch and input channels."""
        return cls(cfg, vision_tower.cfg.width, vision_tower.cfg.patch, vision_tower.cfg.in_chans)

    def no_weight_decay(self) -> set[str]:
        return {"mask_token"}

    def forward(self, tokens: torch.Tensor, keep_idx: torch.Tensor, grid: Triple,
                token_mask: torch.Tensor | None = None) -> torch.Tensor:
        """tokens (B, N_keep, C_enc) of the visible patches, keep_idx (B, N_keep) their z-major indices in
        ``grid`` (gz, gy, gx), token_mask (B, N) valid tokens (None: all) -> predictions (B, N, P)."""
        b, n_keep, _ = tokens.shape
        n = grid[0] * grid[1] * grid[2]
        if tuple(keep_idx.shape) != (b, n_keep) or n_keep > n:
            raise ValueError(f"keep_idx must be (B, N_keep) = ({b}, {n_keep}) with N_keep <= N = {n}; "
                             f"got {tuple(keep_idx.shape)}")
        if token_mask is not None and tuple(token_mask.shape) != (b, n):
            raise ValueError(f"token_mask must be (B, N) = ({b}, {n}); got {tuple(token_mask.shape)}")
        x = self.embed(tokens)  # (B, N_keep, C_dec)
        c = x.shape[-1]
        full = self.mask_token.to(x.dtype).expand(b, n, c)  # (B, N, C_dec)
        x = full.scatter(1, keep_idx.to(x.device, torch.long)[..., None].expand(-1, -1, c), x)  # unshuffle
        key_mask = None if token_mask is None or bool(token_mask.all()) else token_mask.to(x.device, torch.bool)
        rope = self.rope(tuple(grid), 0, x.device)  # (N, r) each
        for block in self.blocks:
            x = block(x, rope, key_mask)
        return self.head(self.norm(x))  # (B, N, P)


def masked_autoencoder_step(vision_tower: nn.Module, decoder: MaeDecoder, image: torch.Tensor,
                            ratio: float = 0.75, generator: torch.Generator | None = None,
                            slice_mask: torch.Tensor | None = None) -> dict:
    """One MAE forward pass: ``image`` (B, C, D, H, W) -> ``MaeLoss``'s keyword arguments.

    Returns ``mae_pred`` (B, N, P) decoder predictions for every patch, ``mae_target`` (B, N, P) the
    raw patch voxels (``patchify3d``; the loss normalises them per patch) and ``mae_mask`` (B, N), True on
    the masked patches, where the loss is taken. Masking is per sample (``random_masking``;
    ``generator`` on the image's device). A depth that is not a multiple of pz is repeat-padded as the
    ViT does; with ``slice_mask``, padding tokens are neither keys nor loss terms (they may still be
    drawn as visible, wasting a slot).
    """
    pz = decoder.patch[0]
    if tuple(vision_tower.cfg.patch) != decoder.patch:
        raise ValueError(f"tower patch {vision_tower.cfg.patch} != decoder patch {decoder.patch}")
    if pad := -image.shape[2] % pz:  # same repeat padding as VisionTransformer3d._pad_depth
        image = torch.cat((image, image[:, :, -1:].expand(-1, -1, pad, -1, -1)), dim=2)
        if slice_mask is not None:
            slice_mask = torch.cat((slice_mask, slice_mask.new_zeros(slice_mask.shape[0], pad)), dim=1)
    target = patchify3d(image, decoder.patch)  # (B, N, P); raises on H, W not multiples of the patch
    b, n, _ = target.shape
    keep_idx, mask = random_masking(b, n, ratio, generator, image.device)  # (B, N_keep), (B, N)
    out = vision_tower.forward_visible(image, keep_idx, slice_mask)
    token_mask = None
    if slice_mask is not None:
        gz, gy, gx = out["grid"]
        valid_z = slice_mask.to(image.device, torch.bool).view(b, gz, pz).any(dim=-1)  # (B, gz)
        token_mask = valid_z[:, :, None].expand(-1, -1, gy * gx).reshape(b, n)  # (B, N), as the ViT's
        mask = mask & token_mask
    pred = decoder(out["tokens"], keep_idx, out["grid"], token_mask)  # (B, N, P)
    return {"mae_pred": pred, "mae_target": target, "mae_mask": mask}
