"""Binary cross-entropy over available labels only: Uniferum's labels-as-prompts objective across
datasets with different label sets, where a label a dataset does not annotate is *missing*, never a
silent negative.

For logits z (B, K) (Uniferum scores label k as sigmoid(t cos(v, u_k) + b), so z_bk = t cos(v_b, u_k)
+ b), targets y (B, K) in {0, 1} and availability a (B, K) in {0, 1}:

    L = sum_bk a_bk [softplus(z_bk) - y_bk z_bk] / max(sum_bk a_bk, 1)

softplus(z) - y z = -y log sigmoid(z) - (1 - y) log(1 - sigmoid(z)), computed stably by
``F.binary_cross_entropy_with_logits``. A missing label is replaced by (z, y) = (0, 0) before the loss
and its term by 0 afterwards (``torch.where``, not a multiplication), so its logit's gradient is
exactly 0.0 and its logit and target may hold anything, even inf or NaN; with no label available the
loss is 0 with zero gradients.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ctvlp.losses.base import Loss


def masked_bce_loss(logits: torch.Tensor, targets: torch.Tensor, available: torch.Tensor) -> torch.Tensor:
    """``logits`` (B, K), ``targets`` (B, K) in {0, 1} and ``available`` (B, K) bool (or 0/1), True
    where sample b has an annotation for label k. Returns the mean BCE over the available entries."""
    if logits.ndim != 2:
        raise ValueError(f"logits must be (B, K); got {tuple(logits.shape)}")
    if targets.shape != logits.shape or available.shape != logits.shape:
        raise ValueError(f"logits, targets and available must all be (B, K); got logits {tuple(logits.shape)}, "
                         f"targets {tuple(targets.shape)}, available {tuple(available.shape)}")
    keep = available.to(device=logits.device, dtype=torch.bool)  # (B, K)
    zero = torch.zeros((), dtype=logits.dtype, device=logits.device)
    z = torch.where(keep, logits, zero)  # (B, K), missing -> 0
    y = torch.where(keep, targets.to(device=logits.device, dtype=logits.dtype), zero)  # (B, K)
    terms = torch.where(keep, F.binary_cross_entropy_with_logits(z, y, reduction="none"), zero)  # (B, K)
    return terms.sum() / keep.sum().clamp(min=1)


class MaskedBCELoss(Loss):
    """:func:`masked_bce_loss` on the model's output dict: ``label_logits`` (t cos(v, u_k) + b),
    ``label_targets`` and ``label_available``, all (B, K)."""

    reads = ("labels",)
    batch_keys = ("label_targets", "label_available")
    data = ("labels",)

    def forward(self, label_logits: torch.Tensor, label_targets: torch.Tensor, label_available: torch.Tensor,
                **unused) -> torch.Tensor:
        return masked_bce_loss(label_logits, label_targets, label_available)
