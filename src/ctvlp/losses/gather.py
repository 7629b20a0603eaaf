"""All-gather of embeddings across ranks with gradients, as open_clip's ``gather_with_grad``.

Contrastive losses see more negatives when every rank scores its local rows against the whole
global batch. ``torch.distributed.nn.functional.all_gather`` is differentiable: its backward sums
the gradients that every rank computed for a block of rows and hands the sum to the rank that owns
those rows (a reduce-scatter). With ``L_r`` the loss computed on rank ``r`` this gives rank ``r``
the gradient ``d(sum_r' L_r') / dx_r`` for its local rows ``x_r``.

All ranks must call these functions with the same local batch size ``B_local`` (collective ops
need equal shapes); the gathered batch is in rank order, so rank ``r``'s rows start at
``r * B_local``.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn


def is_distributed() -> bool:
    """True when a default process group with more than one rank is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_features(x: torch.Tensor) -> torch.Tensor:
    """All-gather ``x`` (B_local, D) from every rank -> (W * B_local, D) in rank order, with gradients
    flowing back to the owning rank; ``x`` itself when not distributed (or world size 1)."""
    if not is_distributed():
        return x
    return torch.cat(dist_fn.all_gather(x), dim=0)  # (W * B_local, D)


def rank_offset(batch_local: int) -> int:
    """Index of this rank's first row in the gathered batch: ``rank * batch_local`` (0 when not
    distributed)."""
    return dist.get_rank() * batch_local if is_distributed() else 0
