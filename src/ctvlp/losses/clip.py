"""CLIP's symmetric InfoNCE loss (Radford et al. 2021, "Learning Transferable Visual Models From
Natural Language Supervision"), with open_clip's ``local_loss + gather_with_grad`` across ranks.

For L2-normalised image embeddings I (B, D), text embeddings T (B, D) and the logit multiplier t
(already exponentiated), with logits S = t I T^T (B, B):

    L = 1/2 [ -(1/B) sum_i log softmax_j(S_ij)[i]  -(1/B) sum_j log softmax_i(S_ij)[j] ]

the mean of the image->text and text->image cross-entropies with the matching pair (the diagonal)
as the target.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ctvlp.losses.base import Loss
from ctvlp.losses.gather import gather_features, is_distributed, rank_offset


def check_pair(image_emb: torch.Tensor, text_emb: torch.Tensor) -> None:
    """Image and text embeddings must both be (B, D) with the same B >= 1 and D."""
    if image_emb.ndim != 2 or image_emb.shape != text_emb.shape or image_emb.shape[0] == 0:
        raise ValueError(f"image and text embeddings must both be (B, D) with the same B >= 1 and D; "
                         f"got image {tuple(image_emb.shape)}, text {tuple(text_emb.shape)}")


def check_scalar(name: str, value: torch.Tensor | float) -> None:
    """A logit scale or bias must be a number or a one-element tensor."""
    if isinstance(value, torch.Tensor) and value.numel() != 1:
        raise ValueError(f"{name} must be a scalar; got shape {tuple(value.shape)}")


def local_clip_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, all_image_emb: torch.Tensor,
                    all_text_emb: torch.Tensor, logit_scale: torch.Tensor | float, offset: int) -> torch.Tensor:
    """open_clip's local loss: the local rows (B, D) scored against the whole batch (N, D) of the
    other modality; local row i's positive is row ``offset + i`` of the whole batch."""
    labels = torch.arange(offset, offset + image_emb.shape[0], device=image_emb.device)  # (B,)
    logits_per_image = logit_scale * image_emb @ all_text_emb.T  # (B, N)
    logits_per_text = logit_scale * text_emb @ all_image_emb.T  # (B, N)
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2


def clip_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor | float) -> torch.Tensor:
    """Symmetric InfoNCE on one process: ``image_emb`` and ``text_emb`` (B, D) L2-normalised, row i of
    each a matching pair; ``logit_scale`` t (scalar, already exponentiated). Returns a scalar."""
    check_pair(image_emb, text_emb)
    check_scalar("logit_scale", logit_scale)
    return local_clip_loss(image_emb, text_emb, image_emb, text_emb, logit_scale, 0)


class ClipLoss(Loss):
    """CLIP loss over the global batch when ``gather`` is on and torch.distributed runs.

    Each rank scores its local images against all gathered texts and its local texts against all
    gathered images (labels offset by rank * B_local). The mean over ranks of the returned loss then
    equals :func:`clip_loss` on the global batch; because the gather's backward sums every rank's
    gradient for a row, the gradient on rank r for its own rows is W times the single-process one,
    and DDP's average over ranks of the parameter gradients gives exactly the single-process
    gradient. With ``gather`` off each rank uses only its local batch (CT-CLIP's behaviour).
    """

    reads = ("pairs",)
    data = ("report text",)
    contrastive = True

    def __init__(self, gather: bool = True):
        super().__init__()
        self.gather = gather

    def forward(self, image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor | float,
                **unused) -> torch.Tensor:
        if not (self.gather and is_distributed()):
            return clip_loss(image_emb, text_emb, logit_scale)
        check_pair(image_emb, text_emb)
        check_scalar("logit_scale", logit_scale)
        all_image, all_text = gather_features(image_emb), gather_features(text_emb)  # (W * B, D) each
        return local_clip_loss(image_emb, text_emb, all_image, all_text, logit_scale,
                               rank_offset(image_emb.shape[0]))
