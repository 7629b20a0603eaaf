"""Masked-autoencoder reconstruction loss (He et al. 2022, "Masked Autoencoders Are Scalable Vision
Learners"), in 3D for COLIPRI's image-only batches (75 % masking, normalised patch targets).

A volume (B, C, D, H, W) is cut into N = gz * gy * gx patches of (pz, py, px) voxels, flattened
z-major then y then x (the token order of ``ctvlp.models.vit3d``), each patch's P = pz * py * px * C
values ordered (z, y, x, channel) like MAE's ``patchify``. With predictions p_n (P,), targets x_n (P,)
and the masked set M = {n: mask_n} (loss only on masked patches):

    x^_n = (x_n - mean(x_n)) / sqrt(var(x_n) + 1e-6)     (norm_pix; var unbiased, as in MAE's code)
    L    = (1/|M|) sum_{n in M} (1/P) ||p_n - x^_n||^2

with M, and the mean, over the whole batch. With no masked patch the loss is 0 (attached to the graph).
"""

from __future__ import annotations

import torch

from ctvlp.losses.base import Loss

Triple = tuple[int, int, int]


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


def mae_loss(pred: torch.Tensor, target_patches: torch.Tensor, mask: torch.Tensor,
             norm_pix: bool = True) -> torch.Tensor:
    """``pred`` and ``target_patches`` (B, N, P) patch values (see :func:`patchify3d`), ``mask`` (B, N)
    bool, True on masked patches; ``norm_pix``: regress per-patch normalised targets. Returns a scalar:
    the per-patch mean squared error averaged over the masked patches of the batch."""
    if pred.ndim != 3 or pred.shape != target_patches.shape:
        raise ValueError(f"pred and target_patches must both be (B, N, P); got pred {tuple(pred.shape)}, "
                         f"target {tuple(target_patches.shape)}")
    if tuple(mask.shape) != tuple(pred.shape[:2]):
        raise ValueError(f"mask must be (B, N) = {tuple(pred.shape[:2])}; got {tuple(mask.shape)}")
    target = target_patches.detach()
    if norm_pix:
        if target.shape[2] < 2:
            raise ValueError("norm_pix needs at least 2 values per patch (P >= 2)")
        mean = target.mean(dim=-1, keepdim=True)  # (B, N, 1)
        var = target.var(dim=-1, keepdim=True)  # (B, N, 1), unbiased like MAE
        target = (target - mean) / (var + 1.0e-6).sqrt()
    per_patch = (pred - target).pow(2).mean(dim=-1)  # (B, N)
    weight = mask.to(device=per_patch.device, dtype=per_patch.dtype)  # (B, N)
    return (per_patch * weight).sum() / weight.sum().clamp(min=1.0)


class MaeLoss(Loss):
    """:func:`mae_loss` on the model's output dict: ``mae_pred`` and ``mae_target`` (B, N, P), ``mae_mask``
    (B, N). A per-sample loss: ``gather`` is accepted for a uniform constructor and ignored."""

    reads = ("mae",)

    def __init__(self, norm_pix: bool = True, gather: bool = True):
        super().__init__()
        self.norm_pix, self.gather = norm_pix, gather

    def forward(self, mae_pred: torch.Tensor, mae_target: torch.Tensor, mae_mask: torch.Tensor,
                **unused) -> torch.Tensor:
        return mae_loss(mae_pred, mae_target, mae_mask, self.norm_pix)
