"""COLIPRI's Opposite Sentence Loss (OSL; arXiv 2510.15042, Algorithm 1 as re-implemented by a third
party): each image chooses between a sentence and its negation.

For image i, K sentence pairs (s+_ik, s-_ik) with s- the negation of s+ (built by
:func:`ctvlp.data.osl_pairs.build_osl_pairs`): a *true* pair's s+ is one of the image's own findings
(so s+ is right), a *false* pair's s+ is a finding the image does not have (so s- is right). With
L2-normalised image embeddings v_i (D,), sentence embeddings u+_ik, u-_ik (D,), the logit multiplier
t (already exponentiated) and the valid pairs P = {(i, k): m_ik} of the pair mask m:

    L = (1/|P|) sum_{(i,k) in P} -log softmax([t <v_i, u+_ik>, t <v_i, u-_ik>])[y_ik],
    y_ik = 0 (u+) for true pairs, 1 (u-) for false pairs

a two-way cross-entropy, i.e. softplus(t <v_i, u_wrong> - t <v_i, u_right>). It trains the
comparison short-prompt zero-shot classification makes ("X present" vs "no X"). COLIPRI's weight: 0.5.
With no valid pair the loss is 0 (still attached to the graph).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ctvlp.losses.base import Loss
from ctvlp.losses.clip import check_scalar


def opposite_sentence_loss(image_emb: torch.Tensor, pos_emb: torch.Tensor, neg_emb: torch.Tensor,
                           is_true: torch.Tensor, logit_scale: torch.Tensor | float,
                           pair_mask: torch.Tensor | None = None) -> torch.Tensor:
    """``image_emb`` (B, D), ``pos_emb`` and ``neg_emb`` (B, K, D) L2-normalised (s+ and its negation
    s- for K pairs per image), ``is_true`` (B, K) bool (target s+ where True, s- where False),
    ``logit_scale`` t (scalar, already exponentiated), ``pair_mask`` (B, K) bool, True on real pairs
    (None: all). Returns a scalar: the mean over real pairs."""
    if image_emb.ndim != 2 or pos_emb.ndim != 3 or pos_emb.shape != neg_emb.shape \
            or pos_emb.shape[0] != image_emb.shape[0] or pos_emb.shape[2] != image_emb.shape[1]:
        raise ValueError(f"expected image (B, D) and pos/neg sentence embeddings (B, K, D) with the same B and D; "
                         f"got image {tuple(image_emb.shape)}, pos {tuple(pos_emb.shape)}, "
                         f"neg {tuple(neg_emb.shape)}")
    pairs = tuple(pos_emb.shape[:2])
    if tuple(is_true.shape) != pairs:
        raise ValueError(f"is_true must be (B, K) = {pairs}; got {tuple(is_true.shape)}")
    if pair_mask is not None and tuple(pair_mask.shape) != pairs:
        raise ValueError(f"pair_mask must be (B, K) = {pairs}; got {tuple(pair_mask.shape)}")
    check_scalar("logit_scale", logit_scale)
    pos = torch.einsum("bd,bkd->bk", image_emb, pos_emb)  # (B, K) cos(v_i, u+_ik)
    neg = torch.einsum("bd,bkd->bk", image_emb, neg_emb)  # (B, K) cos(v_i, u-_ik)
    logits = logit_scale * torch.stack((pos, neg), dim=-1)  # (B, K, 2)
    targets = (~is_true.to(device=logits.device, dtype=torch.bool)).long()  # (B, K): 0 = s+, 1 = s-
    per_pair = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view(pairs)  # (B, K)
    if pair_mask is None:
        return per_pair.mean()
    mask = pair_mask.to(device=per_pair.device, dtype=per_pair.dtype)  # (B, K)
    return (per_pair * mask).sum() / mask.sum().clamp(min=1.0)


class OppositeSentenceLoss(Loss):
    """:func:`opposite_sentence_loss` on the model's output dict: ``image_emb``, ``logit_scale`` and the
    OSL entries ``osl_pos_emb``, ``osl_neg_emb`` (B, K, D), ``osl_is_true`` (B, K) and optional
    ``osl_mask`` (B, K) (the ``valid`` of :func:`~ctvlp.data.osl_pairs.build_osl_pairs`).

    Each pair involves one image only, so there is nothing to gather across ranks: ``gather`` is
    accepted for a uniform constructor and ignored. Each rank averages over its own real pairs (with
    masks the mean over ranks weights ranks equally, not pairs).
    """

    reads = ("osl",)
    data = ("report text",)

    def __init__(self, gather: bool = True):
        super().__init__()
        self.gather = gather

    def forward(self, image_emb: torch.Tensor, osl_pos_emb: torch.Tensor, osl_neg_emb: torch.Tensor,
                osl_is_true: torch.Tensor, logit_scale: torch.Tensor | float,
                osl_mask: torch.Tensor | None = None, **unused) -> torch.Tensor:
        return opposite_sentence_loss(image_emb, osl_pos_emb, osl_neg_emb, osl_is_true, logit_scale, osl_mask)
