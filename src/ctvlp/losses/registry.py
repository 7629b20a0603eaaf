"""The one list of losses a config can name: name -> class (each class declares its facts, see
``ctvlp.losses.base.Loss``).

``LossConfig`` validates names against :data:`LOSSES`, ``Objective`` builds its terms from it and asks
which model output groups they read, ``train.requirements`` asks what each needs from the cache, and the
trainer asks whether any term uses the logit bias. Adding a loss is one file in ``ctvlp/losses`` and one
line here.
"""

from __future__ import annotations

from collections.abc import Iterable

from ctvlp.losses.base import Loss
from ctvlp.losses.caption import CaptionLoss
from ctvlp.losses.clip import ClipLoss
from ctvlp.losses.mae import MaeLoss
from ctvlp.losses.masked_bce import MaskedBCELoss
from ctvlp.losses.opposite_sentence import OppositeSentenceLoss
from ctvlp.losses.sentence_sigmoid import SentenceSigmoidLoss
from ctvlp.losses.siglip import SigLipLoss
from ctvlp.losses.swca import SwcaLoss
from ctvlp.losses.tversky import TverskyLoss

LOSSES: dict[str, type[Loss]] = {
    "siglip": SigLipLoss,
    "clip": ClipLoss,
    "sentence_sigmoid": SentenceSigmoidLoss,
    "swca": SwcaLoss,
    "tversky": TverskyLoss,
    "masked_bce": MaskedBCELoss,
    "osl": OppositeSentenceLoss,
    "caption": CaptionLoss,
    "mae": MaeLoss,
}
"""Every loss term a config can name, in the order error messages list them."""

LOSS_NAMES = tuple(LOSSES)
"""The names of :data:`LOSSES`."""
CONTRASTIVE = tuple(name for name, cls in LOSSES.items() if cls.contrastive)
"""Image-text terms; one of them is the main term of the image-report objective."""


def loss_class(name: str) -> type[Loss]:
    """The class of loss ``name``; a ValueError lists the known names."""
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; losses: {', '.join(LOSS_NAMES)}") from None


def reads(terms: Iterable[str]) -> tuple[str, ...]:
    """The model output groups the ``terms`` read, in first-use order."""
    return tuple(dict.fromkeys(group for name in terms for group in loss_class(name).reads))


def uses_logit_bias(terms: Iterable[str]) -> bool:
    """Whether some term reads the model's ``logit_bias`` (a run where none does freezes it)."""
    return any(loss_class(name).uses_logit_bias for name in terms)
