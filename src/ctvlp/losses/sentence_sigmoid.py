"""Sentence-level sigmoid loss: every image against every distinct sentence of the batch, with each
of its own report's sentences as a positive (a multi-positive SigLIP).

A report says one thing per sentence ("No pleural effusion.", "The heart is enlarged, ...") and the
same sentence recurs across reports. Pairing an image with the *mean* of its sentences (the
sample-level SigLIP) asks a single prompt sentence to stand in for a whole report at zero-shot time;
scoring images against the batch's distinct sentences trains exactly the comparison zero-shot
classification makes, and an identical sentence in another report counts as a positive for that
report's image too (not as a false negative).

For L2-normalised image embeddings I (B, D), the batch's distinct sentence embeddings S (N, D),
targets y (B, N) with y_in = 1 when sentence n is one of image i's sentences, the logit multiplier t
(already exponentiated) and bias b:

    L = -(1/B) sum_i sum_n log sigmoid(z_in (t <I_i, S_n> + b)),   z_in = 2 y_in - 1

With one sentence per image and y the identity this is :func:`~ctvlp.losses.siglip.siglip_loss`.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ctvlp.losses.base import Loss
from ctvlp.losses.clip import check_scalar
from ctvlp.losses.gather import gather_features, is_distributed


def sentence_sigmoid_loss(image_emb: torch.Tensor, sentence_emb: torch.Tensor, sentence_targets: torch.Tensor,
                          logit_scale: torch.Tensor | float, logit_bias: torch.Tensor | float) -> torch.Tensor:
    """``image_emb`` (B, D) and ``sentence_emb`` (N, D) L2-normalised, ``sentence_targets`` (B, N) in
    {0, 1}; ``logit_scale`` t and ``logit_bias`` b scalars. Returns a scalar."""
    if image_emb.ndim != 2 or sentence_emb.ndim != 2 or image_emb.shape[1] != sentence_emb.shape[1]:
        raise ValueError(f"image (B, D) and sentence (N, D) embeddings must share D; got image "
                         f"{tuple(image_emb.shape)}, sentences {tuple(sentence_emb.shape)}")
    if sentence_targets.shape != (image_emb.shape[0], sentence_emb.shape[0]):
        raise ValueError(f"sentence_targets must be (B, N) = {(image_emb.shape[0], sentence_emb.shape[0])}; "
                         f"got {tuple(sentence_targets.shape)}")
    check_scalar("logit_scale", logit_scale)
    check_scalar("logit_bias", logit_bias)
    logits = logit_scale * image_emb @ sentence_emb.T + logit_bias  # (B, N)
    signs = 2.0 * sentence_targets.to(logits.dtype) - 1.0  # (B, N)
    return -F.logsigmoid(signs * logits).sum() / image_emb.shape[0]


def _all_gather_ids(ids: torch.Tensor, n: int) -> torch.Tensor:
    """(W * n,) int64: every rank's ``ids`` padded with -1 to ``n``, in rank order."""
    out = [torch.empty(n, dtype=ids.dtype, device=ids.device) for _ in range(dist.get_world_size())]
    dist.all_gather(out, F.pad(ids, (0, n - ids.shape[0]), value=-1))
    return torch.cat(out)


def _gather_sentences(sentence_emb: torch.Tensor, sentence_ids: torch.Tensor, sentence_keys: torch.Tensor,
                      sentence_targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every rank's distinct sentences, each sentence once (its first occurrence in rank order), and the
    local images' targets over them: (N_global, D) with gradients to the owning rank, (B, N_global).
    A global column is a positive of a local image when its key equals the key of a local column that
    is one of the image's positives."""
    n = torch.tensor([sentence_emb.shape[0]], device=sentence_emb.device)
    dist.all_reduce(n, op=dist.ReduceOp.MAX)
    pad = int(n) - sentence_emb.shape[0]
    emb = gather_features(F.pad(sentence_emb, (0, 0, 0, pad)))  # (W * n, D)
    ids = _all_gather_ids(sentence_ids, int(n))  # (W * n,), -1 = padding
    keys = _all_gather_ids(sentence_keys, int(n))  # (W * n,)
    same = ids[:, None] == ids[None, :]  # (W * n, W * n)
    earlier = torch.ones_like(same).tril(-1)
    keep = (ids >= 0) & ~(same & earlier).any(dim=1)  # real and first of its id
    emb, keys = emb[keep], keys[keep]
    match = (sentence_keys[:, None] == keys[None, :]).to(sentence_targets.dtype)  # (N_local, N_global)
    return emb, (sentence_targets @ match).clamp(max=1)


class SentenceSigmoidLoss(Loss):
    """Sentence-level sigmoid loss over the global batch when ``gather`` is on and torch.distributed
    runs: each rank gathers every rank's distinct sentences (identified by ``sentence_ids``, a stable
    hash of the text, so a sentence on two ranks is one column; matched to images by ``sentence_keys``,
    default the ids), scores its local images against them and divides by the local batch size; the
    mean over ranks equals the loss on the global batch."""

    reads = ("pairs",)
    data = ("report text",)
    contrastive = True
    uses_logit_bias = True
    text_input = "sentences"

    def __init__(self, gather: bool = True):
        super().__init__()
        self.gather = gather

    def forward(self, image_emb: torch.Tensor, sentence_emb: torch.Tensor, sentence_targets: torch.Tensor,
                logit_scale: torch.Tensor | float, logit_bias: torch.Tensor | float,
                sentence_ids: torch.Tensor | None = None, sentence_keys: torch.Tensor | None = None,
                sentence_logit_scale: torch.Tensor | None = None, sentence_logit_bias: torch.Tensor | None = None,
                **unused) -> torch.Tensor:
        """The model's own sentence-level scale and bias are used when it has them."""
        if sentence_logit_scale is not None:
            logit_scale, logit_bias = sentence_logit_scale, sentence_logit_bias
        if self.gather and is_distributed():
            if sentence_ids is None:
                raise ValueError("the distributed sentence loss needs sentence_ids to match sentences across ranks")
            keys = sentence_ids if sentence_keys is None else sentence_keys
            sentence_emb, sentence_targets = _gather_sentences(sentence_emb, sentence_ids, keys, sentence_targets)
        return sentence_sigmoid_loss(image_emb, sentence_emb, sentence_targets, logit_scale, logit_bias)
