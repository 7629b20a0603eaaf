"""The training objective: a weighted sum of named losses from ``ctvlp.losses``.

``Objective(cfg.loss)(**model_outputs)`` returns ``{"loss": total, name: term, ...}``; the trainer
back-propagates ``loss`` and logs every term as ``loss_<name>``. A recipe chooses its terms in
:class:`~ctvlp.train.config.LossConfig`; the losses themselves live in ``ctvlp.losses``, one per file,
listed in ``ctvlp.losses.registry`` with what each reads.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from ctvlp.losses.registry import loss_class, reads
from ctvlp.train.config import LossConfig


def build_term(name: str, cfg: LossConfig) -> nn.Module:
    """Loss module ``name`` with ``cfg.options[name]`` (and ``gather`` where the loss has it); a
    ValueError names the option the loss does not take."""
    cls = loss_class(name)
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
        self.weights, self.options = cfg.terms, cfg.options
        self.terms = nn.ModuleDict({name: build_term(name, cfg) for name in self.weights})

    @property
    def outputs(self) -> tuple[str, ...]:
        """The model output groups this objective reads (each loss's ``reads``)."""
        return reads(self.weights)

    @property
    def batch_keys(self) -> tuple[str, ...]:
        """The keys of the collated batch this objective's terms read (each loss's ``batch_inputs``)."""
        return tuple(dict.fromkeys(key for name in self.weights
                                   for key in loss_class(name).batch_inputs(self.options.get(name, {}))))

    def forward(self, **outputs) -> dict[str, torch.Tensor]:
        parts = {name: term(**outputs) for name, term in self.terms.items()}
        total = sum(self.weights[name] * value for name, value in parts.items())
        return {"loss": total, **parts}
