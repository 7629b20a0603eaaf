"""Training objectives: one file per loss, each a plain function plus an ``nn.Module`` whose
``forward`` takes the model's output dict as keyword arguments (``loss_fn(**outputs)``)."""

from __future__ import annotations

from ctvlp.losses.clip import ClipLoss, clip_loss
from ctvlp.losses.gather import gather_features
from ctvlp.losses.siglip import SigLipLoss, siglip_loss

__all__ = ["ClipLoss", "SigLipLoss", "clip_loss", "gather_features", "siglip_loss"]
