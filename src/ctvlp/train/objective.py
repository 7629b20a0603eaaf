"""The training objective: a weighted sum of named losses from ``ctvlp.losses``.

``Objective(cfg.loss)(**model_outputs)`` returns ``{"loss": total, name: term, ...}``; the trainer
back-propagates ``loss`` and logs every term as ``loss_<name>``. A recipe chooses its terms in
:class:`~ctvlp.train.config.LossConfig`; the losses themselves live in ``ctvlp.losses``, one per file.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from ctvlp.losses import (CaptionLoss, ClipLoss, MaeLoss, MaskedBCELoss, OppositeSentenceLoss, SentenceSigmoidLoss,
                          SigLipLoss, SwcaLoss, TverskyLoss)
from ctvlp.train.config import LOSS_NAMES, LossConfig

LOSSES = {"siglip": SigLipLoss, "clip": ClipLoss, "sentence_sigmoid": SentenceSigmoidLoss, "swca": SwcaLoss,
          "tversky": TverskyLoss, "masked_bce": MaskedBCELoss, "osl": OppositeSentenceLoss, "caption": CaptionLoss,
          "mae": MaeLoss}
assert set(LOSSES) == set(LOSS_NAMES)
READS = {"siglip": ("pairs",), "clip": ("pairs",), "sentence_sigmoid": ("pairs",), "swca": ("pairs",),
         "tversky": ("seg",), "masked_bce": ("labels",), "osl": ("osl",), "caption": ("caption",), "mae": ("mae",)}
"""The model output groups (``ctvlp.models.vlp.OUTPUT_GROUPS``) each loss reads."""


def build_term(name: str, cfg: LossConfig) -> nn.Module:
    """Loss module ``name`` with ``cfg.options[name]`` (and ``gather`` where the loss has it); a
    ValueError names the option the loss does not take."""
    cls = LOSSES[name]
    params = inspect.signature(cls).parameters
    kwargs = {**({"gather": cfg.gather} if "gather" in params else {}), **cfg.options.get(name, {})}
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise ValueError(f"loss.options.{name}: {cls.__name__} takes no {unknown}; it takes {sorted(params)}")
    return cls(**kwargs)


class Objective(nn.Module):
    """The sum of ``cfg.terms``: each loss built with ``gather=cfg.gather`` and weighted."""

    def __init__(self, cfg: LossConfig):
        super().__init__()
        self.weights = cfg.terms
        self.terms = nn.ModuleDict({name: build_term(name, cfg) for name in self.weights})

    @property
    def outputs(self) -> tuple[str, ...]:
        """The model output groups this objective reads."""
        return tuple(dict.fromkeys(group for name in self.weights for group in READS[name]))

    def forward(self, **outputs) -> dict[str, torch.Tensor]:
        parts = {name: term(**outputs) for name, term in self.terms.items()}
        total = sum(self.weights[name] * value for name, value in parts.items())
        return {"loss": total, **parts}
