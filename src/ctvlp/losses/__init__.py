"""Training objectives: one file per loss, each a plain function plus an ``nn.Module`` whose
``forward`` takes the model's output dict as keyword arguments (``loss_fn(**outputs)``)."""

from __future__ import annotations

from ctvlp.losses.caption import CaptionLoss, caption_loss
from ctvlp.losses.clip import ClipLoss, clip_loss
from ctvlp.losses.gather import gather_features
from ctvlp.losses.mae import MaeLoss, mae_loss
from ctvlp.losses.masked_bce import MaskedBCELoss, masked_bce_loss
from ctvlp.losses.opposite_sentence import OppositeSentenceLoss, opposite_sentence_loss
from ctvlp.losses.sentence_sigmoid import SentenceSigmoidLoss, sentence_sigmoid_loss
from ctvlp.losses.siglip import SigLipLoss, siglip_loss
from ctvlp.losses.swca import SwcaLoss, swca_loss
from ctvlp.losses.tversky import TverskyLoss, tversky_loss

__all__ = ["CaptionLoss", "ClipLoss", "MaeLoss", "MaskedBCELoss", "OppositeSentenceLoss", "SentenceSigmoidLoss",
           "SigLipLoss", "SwcaLoss", "TverskyLoss", "caption_loss", "clip_loss", "gather_features", "mae_loss",
           "masked_bce_loss", "opposite_sentence_loss", "sentence_sigmoid_loss", "siglip_loss", "swca_loss",
           "tversky_loss"]
