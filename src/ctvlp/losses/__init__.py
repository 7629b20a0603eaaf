"""Training objectives: one file per loss, each a plain function plus a :class:`~ctvlp.losses.base.Loss`
module whose ``forward`` takes the model's output dict as keyword arguments (``loss_fn(**outputs)``) and
whose class attributes say what it reads and needs; ``ctvlp.losses.registry`` is the one list of them."""

from __future__ import annotations

from ctvlp.losses.base import Loss
from ctvlp.losses.caption import CaptionLoss, caption_loss
from ctvlp.losses.clip import ClipLoss, clip_loss
from ctvlp.losses.gather import gather_features
from ctvlp.losses.mae import MaeLoss, mae_loss
from ctvlp.losses.masked_bce import MaskedBCELoss, masked_bce_loss
from ctvlp.losses.opposite_sentence import OppositeSentenceLoss, opposite_sentence_loss
from ctvlp.losses.registry import LOSSES, loss_class
from ctvlp.losses.sentence_sigmoid import SentenceSigmoidLoss, sentence_sigmoid_loss
from ctvlp.losses.siglip import SigLipLoss, siglip_loss
from ctvlp.losses.swca import SwcaLoss, swca_loss
from ctvlp.losses.tversky import TverskyLoss, tversky_loss

__all__ = ["LOSSES", "CaptionLoss", "ClipLoss", "Loss", "MaeLoss", "MaskedBCELoss", "OppositeSentenceLoss",
           "SentenceSigmoidLoss", "SigLipLoss", "SwcaLoss", "TverskyLoss", "caption_loss", "clip_loss",
           "gather_features", "loss_class", "mae_loss", "masked_bce_loss", "opposite_sentence_loss",
           "sentence_sigmoid_loss", "siglip_loss", "swca_loss", "tversky_loss"]
