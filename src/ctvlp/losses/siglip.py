"""SigLIP's pairwise sigmoid loss (Zhai et al. 2023, "Sigmoid Loss for Language Image
Pre-Training"), with local images scored against gathered texts across ranks (open_clip's gather).

For L2-normalised image embeddings I (B, D), text embeddings T (B, D), the logit multiplier t
(already exponentiated) and bias b:

    L = -(1/B) sum_ij log sigmoid(z_ij (t <I_i, T_j> + b)),   z_ij = +1 if i == j else -1

computed with ``F.logsigmoid`` (stable for large |logits|).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ctvlp.losses.base import Loss
from ctvlp.losses.clip import check_pair, check_scalar
from ctvlp.losses.gather import gather_features, is_distributed, rank_offset


def local_siglip_loss(image_emb: torch.Tensor, all_text_emb: torch.Tensor, logit_scale: torch.Tensor | float,
                      logit_bias: torch.Tensor | float, offset: int) -> torch.Tensor:
    """Local images (B, D) against all texts (N, D); image i's positive is text ``offset + i``.
    Normalised by the local B, so the mean over ranks is the loss on the global batch."""
    b = image_emb.shape[0]
    logits = logit_scale * image_emb @ all_text_emb.T + logit_bias  # (B, N)
    rows = torch.arange(b, device=logits.device)  # (B,)
    signs = torch.full_like(logits, -1.0)  # (B, N)
    signs[rows, rows + offset] = 1.0
    return -F.logsigmoid(signs * logits).sum() / b


def siglip_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor | float,
                logit_bias: torch.Tensor | float) -> torch.Tensor:
    """Sigmoid loss on one process: ``image_emb`` and ``text_emb`` (B, D) L2-normalised, row i of each a
    matching pair; ``logit_scale`` t (scalar, already exponentiated) and ``logit_bias`` b (scalar).
    Returns a scalar."""
    check_pair(image_emb, text_emb)
    check_scalar("logit_scale", logit_scale)
    check_scalar("logit_bias", logit_bias)
    return local_siglip_loss(image_emb, text_emb, logit_scale, logit_bias, 0)


class SigLipLoss(Loss):
    """SigLIP loss over the global batch when ``gather`` is on and torch.distributed runs.

    Each rank scores its local images against all gathered texts (every pair (i, j) of the global
    batch is counted once, on the rank that owns image i) and divides by the local batch size, so
    the mean over ranks equals :func:`siglip_loss` on the global batch. Gradients: as for
    :class:`ClipLoss`, rank r's gradient for its own rows is W times the single-process one and DDP's
    average of parameter gradients equals the single-process gradient. With ``gather`` off each rank
    uses only its local batch.
    """

    reads = ("pairs",)
    data = ("report text",)
    contrastive = True
    uses_logit_bias = True

    def __init__(self, gather: bool = True):
        super().__init__()
        self.gather = gather

    def forward(self, image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor | float,
                logit_bias: torch.Tensor | float, **unused) -> torch.Tensor:
        if not (self.gather and is_distributed()):
            return siglip_loss(image_emb, text_emb, logit_scale, logit_bias)
        check_pair(image_emb, text_emb)
        check_scalar("logit_scale", logit_scale)
        check_scalar("logit_bias", logit_bias)
        all_text = gather_features(text_emb)  # (W * B, D)
        return local_siglip_loss(image_emb, all_text, logit_scale, logit_bias, rank_offset(image_emb.shape[0]))
