"""Report-generation (captioning) loss: causal language-model cross-entropy, COLIPRI's RRG objective.

Shift convention: the caller passes **already shifted** targets. The decoder reads token ids
x (B, L) and emits logits (B, L, V); position l predicts the *next* token, so targets[:, l] =
x[:, l + 1] and the last position (and every padding position) holds ``ignore_index``.
``ctvlp.models.decoder.next_token_targets`` builds such targets from x and its attention mask (the
model puts them in its output dict as ``caption_targets``); this loss never shifts. With the real
positions R = {(b, l): targets_bl != ignore_index (and != pad_id)}:

    L = (1/|R|) sum_{(b,l) in R} -log softmax(logits_bl)[targets_bl]

a mean over the batch's real tokens (long reports weigh more than short ones, as in a token-level
LM loss). With no real token the loss is 0 (attached to the graph).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ctvlp.losses.base import Loss


def caption_loss(logits: torch.Tensor, targets: torch.Tensor, pad_id: int | None = None,
                 ignore_index: int = -100) -> torch.Tensor:
    """``logits`` (B, L, V) of a causal decoder, ``targets`` (B, L) already-shifted next-token ids
    (see the module docstring). Positions whose target is ``ignore_index`` or, when given, ``pad_id``
    are ignored (do not pass ``pad_id`` when it is also a real token, e.g. a pad = EOS tokenizer: use
    ``next_token_targets`` with the attention mask instead). Returns a scalar: the mean over real
    tokens."""
    if logits.ndim != 3 or targets.shape != logits.shape[:2]:
        raise ValueError(f"expected logits (B, L, V) and targets (B, L) with the same B and L; "
                         f"got logits {tuple(logits.shape)}, targets {tuple(targets.shape)}")
    targets = targets.to(device=logits.device, dtype=torch.long)
    if pad_id is not None:
        targets = targets.masked_fill(targets == pad_id, ignore_index)
    total = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=ignore_index,
                            reduction="sum")  # summed over real tokens
    count = (targets != ignore_index).sum().clamp(min=1)
    return total / count


class CaptionLoss(Loss):
    """:func:`caption_loss` on the model's output dict: ``caption_logits`` (B, L, V) and
    ``caption_targets`` (B, L), already shifted. A per-token loss: ``gather`` is accepted for a uniform
    constructor and ignored (each rank averages over its own real tokens)."""

    reads = ("caption",)
    data = ("report text",)

    def __init__(self, pad_id: int | None = None, ignore_index: int = -100, gather: bool = True):
        super().__init__()
        self.pad_id, self.ignore_index, self.gather = pad_id, ignore_index, gather

    def forward(self, caption_logits: torch.Tensor, caption_targets: torch.Tensor, **unused) -> torch.Tensor:
        return caption_loss(caption_logits, caption_targets, self.pad_id, self.ignore_index)
