"""Masked-autoencoder reconstruction loss (He et al. 2022, "Masked Autoencoders Are Scalable Vision
Learners"), in 3D for COLIPRI's image-only batches (75 % masking, normalised patch targets).

A volume (B, C, D, H, W) is cut into N = gz * gy * gx patches of (pz, py, px) voxels, flattened
z-major then y then x (the token order of ``ctvlp.models.vit3d``), each patch's P = pz * py * px * C
values ordered (z, y, x, channel) like MAE's ``patchify`` (``ctvlp.models.layers.patchify3d``; the
model makes the targets and the mask in ``ctvlp.models.mae.masked_autoencoder_step``, and this loss only
reads them). With predictions p_n (P,), targets x_n (P,) and the masked set M = {n: mask_n} (loss only on
masked patches):

    x^_n = (x_n - mean(x_n)) / sqrt(var(x_n) + 1e-6)     (norm_pix; var unbiased, as in MAE's code)
    L    = (1/|M|) sum_{n in M} (1/P) ||p_n - x^_n||^2

with M, and the mean, over the whole batch. With no masked patch the loss is 0 (attached to the graph).
"""

from __future__ import annotations

import torch

from ctvlp.losses.base import Loss


def mae_loss(pred: torch.Tensor, target_patches: torch.Tensor, mask: torch.Tensor,
             norm_pix: bool = True) -> torch.Tensor:
    """``pred`` and ``target_patches`` (B, N, P) patch values (see ``ctvlp.models.layers.patchify3d``),
    ``mask`` (B, N) bool, True on masked patches; ``norm_pix``: regress per-patch normalised targets.
    Returns a scalar: the per-patch mean squared error averaged over the masked patches of the batch."""
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
