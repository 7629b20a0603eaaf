"""Tversky loss (Salehi et al. 2017, "Tversky loss function for image segmentation using 3D fully
convolutional deep networks"), SegVL's voxel-mask loss and Uniferum's dense "Segment <structure>"
objective.

For probabilities P and binary targets y of shape (B, C, *spatial), per sample b and class c, with
sums over the spatial dimensions:

    TP = sum y P,   FP = sum (1 - y) P,   FN = sum y (1 - P)
    L_bc = 1 - (TP + eps) / (TP + alpha_c FP + beta_c FN + eps)
    L = mean over the kept (b, c) of L_bc

alpha weights false positives and beta false negatives (the standard Tversky index; SegVL's paper
prints them swapped, see METHODS.md), each a float or one value per class. Without a mask this is
exactly ``monai.losses.TverskyLoss(alpha=alpha, beta=beta, smooth_nr=eps, smooth_dr=eps)`` (its
defaults: include_background=True, no activation, batch=False, reduction="mean") on the same
probabilities. The optional ``mask`` drops (sample, class) pairs without an annotation: the mean
runs over the kept pairs only, a dropped pair's probabilities get exactly zero gradient and its
targets are never read, and with no pair kept the loss is 0 (not NaN) with zero gradients.
"""

from __future__ import annotations

import torch

from ctvlp.losses.base import Loss


def check_weight(name: str, value: torch.Tensor | float, num_classes: int) -> None:
    """alpha / beta: a number, a one-element tensor or a (C,) tensor."""
    if isinstance(value, torch.Tensor) and value.numel() != 1 and tuple(value.shape) != (num_classes,):
        raise ValueError(f"{name} must be a scalar or a (C,) = ({num_classes},) tensor; got shape {tuple(value.shape)}")


def keep_pairs(mask: torch.Tensor | None, batch: int, num_classes: int, device: torch.device) -> torch.Tensor:
    """The (B, C) bool of kept (sample, class) pairs from a (B, C) or (B,) mask (None keeps all)."""
    if mask is None:
        return torch.ones(batch, num_classes, dtype=torch.bool, device=device)
    if tuple(mask.shape) == (batch,):
        mask = mask[:, None]  # (B, 1)
    elif tuple(mask.shape) != (batch, num_classes):
        raise ValueError(f"mask must be (B, C) = {(batch, num_classes)} or (B,) = ({batch},); "
                         f"got {tuple(mask.shape)}")
    return mask.to(device=device, dtype=torch.bool).expand(batch, num_classes)  # (B, C)


def tversky_loss(probs: torch.Tensor, targets: torch.Tensor, alpha: torch.Tensor | float,
                 beta: torch.Tensor | float, eps: float = 1e-5, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``probs`` (B, C, *spatial) in [0, 1] and binary ``targets`` of the same shape; ``alpha`` (false
    positives) and ``beta`` (false negatives) floats or (C,) tensors; ``eps`` added to numerator and
    denominator; ``mask`` (B, C) or (B,) bool, True where the pair is annotated. Returns a scalar."""
    if probs.ndim < 3 or probs.shape[0] == 0 or probs.shape[1] == 0:
        raise ValueError(f"probs must be (B, C, *spatial) with B, C >= 1 and at least one spatial dimension; "
                         f"got {tuple(probs.shape)}")
    if targets.shape != probs.shape:
        raise ValueError(f"targets must have the shape of probs {tuple(probs.shape)}; got {tuple(targets.shape)}")
    b, c = probs.shape[:2]
    check_weight("alpha", alpha, c)
    check_weight("beta", beta, c)
    if eps < 0:
        raise ValueError(f"eps must be >= 0; got {eps}")
    keep = keep_pairs(mask, b, c, probs.device)  # (B, C)
    spatial = tuple(range(2, probs.ndim))
    y = targets.to(probs.dtype)  # (B, C, *spatial)
    if mask is not None:  # a dropped pair's targets may hold anything (even NaN): never read them
        y = torch.where(keep.reshape(b, c, *([1] * len(spatial))), y, torch.zeros((), dtype=y.dtype, device=y.device))
    tp = (y * probs).sum(dim=spatial)  # (B, C)
    fp = ((1 - y) * probs).sum(dim=spatial)  # (B, C)
    fn = (y * (1 - probs)).sum(dim=spatial)  # (B, C)
    a = torch.as_tensor(alpha, dtype=probs.dtype, device=probs.device).reshape(-1)  # (1,) or (C,)
    w = torch.as_tensor(beta, dtype=probs.dtype, device=probs.device).reshape(-1)  # (1,) or (C,)
    den = tp + a * fp + w * fn + eps  # (B, C)
    # A dropped pair divides by 1, so even eps = 0 on an empty pair gives no 0/0 in forward or backward.
    den = torch.where(keep, den, torch.ones((), dtype=den.dtype, device=den.device))
    score = torch.where(keep, 1 - (tp + eps) / den, torch.zeros((), dtype=den.dtype, device=den.device))  # (B, C)
    return score.sum() / keep.sum().clamp(min=1)


class TverskyLoss(Loss):
    """:func:`tversky_loss` with fixed ``alpha``/``beta`` (per-class tensors kept as buffers, so they
    follow ``.to(device)``) and ``eps``; SegVL uses (0.3, 0.7) for nodules, (0.4, 0.6) for effusion and
    (0.5, 0.5) otherwise. ``forward`` reads ``seg_probs``, ``seg_targets`` and optionally
    ``seg_available`` from the model's output dict."""

    reads = ("seg",)
    data = ("masks",)

    def __init__(self, alpha: torch.Tensor | list[float] | float = 0.5, beta: torch.Tensor | list[float] | float = 0.5,
                 eps: float = 1e-5):
        super().__init__()
        for name, value in (("alpha", alpha), ("beta", beta)):
            if isinstance(value, (list, tuple)):  # per-class values from a config file
                value = torch.tensor(value, dtype=torch.float32)
            if isinstance(value, torch.Tensor):
                if value.ndim > 1:
                    raise ValueError(f"{name} must be a scalar or a (C,) tensor; got shape {tuple(value.shape)}")
                self.register_buffer(name, value.detach().clone() if value.is_floating_point() else value.float())
            else:
                setattr(self, name, float(value))
        self.eps = float(eps)

    def forward(self, seg_probs: torch.Tensor, seg_targets: torch.Tensor, seg_available: torch.Tensor | None = None,
                **unused) -> torch.Tensor:
        return tversky_loss(seg_probs, seg_targets, self.alpha, self.beta, self.eps, mask=seg_available)
