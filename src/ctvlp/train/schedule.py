"""Learning-rate schedule: linear warm-up, then a cosine decay to a floor, as a multiplier of every
group's peak learning rate (Muon and AdamW groups keep their ratio).

    m(s) = (s + 1) / W                                   for s < W
    m(s) = r + (1 - r) (1 + cos(pi p)) / 2,  p = min(1, (s - W) / max(1, T - W))   otherwise

s: optimiser steps taken so far (the first step uses m(0)), W: warm-up steps, T: total steps,
r: ``min_lr_ratio``.
"""

from __future__ import annotations

import functools
import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from ctvlp.train.optim import OptimConfig


def lr_multiplier(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """m(step) of the module docstring."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: Optimizer, cfg: OptimConfig, total_steps: int) -> LambdaLR:
    """A LambdaLR applying :func:`lr_multiplier` to every group; call ``step()`` after each optimiser step."""
    if total_steps < 1:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    fn = functools.partial(lr_multiplier, warmup_steps=cfg.warmup_steps, total_steps=total_steps,
                           min_lr_ratio=cfg.min_lr_ratio)
    return LambdaLR(optimizer, fn)
