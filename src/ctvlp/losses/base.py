"""What every registered loss declares about itself (``ctvlp.losses.registry`` lists them).

A loss is an ``nn.Module`` whose ``forward`` takes the model's output dict (and the batch keys it names)
as keyword arguments. Its class attributes are the facts the rest of the code asks about a loss -- config
validation, the objective, the data-requirement check and the trainer read them here and nowhere else:

- ``reads``: the model output groups (``ctvlp.models.vlp.OUTPUT_GROUPS``) its ``forward`` reads; a step
  asks the model for exactly the groups its terms read.
- ``batch_keys``: keys its ``forward`` reads from the collated batch itself rather than from the model.
- ``data``: what the cache must provide for it (:data:`NEEDS`): report text, labels, segmentation masks.
- ``contrastive``: an image-text term, which may be the main term of the image-report objective.
- ``uses_logit_bias``: reads the model's ``logit_bias`` (a run none of whose terms does freezes it).
- ``text_input``: the ``model.text_input`` it needs (``sentences`` for the sentence-level loss), or None.

Where a fact depends on the loss's options (SWCA reads labels only with ``knowledge: labels``), the
class overrides :meth:`Loss.needs` / :meth:`Loss.batch_inputs`, which take the options of the config.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from torch import nn

NEEDS = ("report text", "labels", "masks")
"""What a loss can need from a cache (``ctvlp.train.requirements`` checks each against the cache)."""


class Loss(nn.Module):
    """Base class of the registered losses: the facts above as class attributes (defaults: reads nothing,
    needs nothing, not contrastive, no logit bias, any text input)."""

    reads: ClassVar[tuple[str, ...]] = ()
    """Model output groups its ``forward`` reads."""
    batch_keys: ClassVar[tuple[str, ...]] = ()
    """Keys its ``forward`` reads from the collated batch (not made by the model)."""
    data: ClassVar[tuple[str, ...]] = ()
    """What the cache must provide (names from :data:`NEEDS`)."""
    contrastive: ClassVar[bool] = False
    """An image-text term: may be the main term of the image-report objective."""
    uses_logit_bias: ClassVar[bool] = False
    """Reads the model's ``logit_bias`` parameter."""
    text_input: ClassVar[str | None] = None
    """The ``model.text_input`` its inputs need (None: either)."""

    @classmethod
    def needs(cls, options: Mapping[str, Any]) -> tuple[str, ...]:
        """What the cache must provide for this loss built with ``options``."""
        return cls.data

    @classmethod
    def batch_inputs(cls, options: Mapping[str, Any]) -> tuple[str, ...]:
        """The batch keys this loss built with ``options`` reads."""
        return cls.batch_keys
