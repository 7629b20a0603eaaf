"""A trained run back from its checkpoint: the model, its spec and the run's whole config.

:func:`load_trained` reads a checkpoint file (or the latest one of a run folder) with the one reader of stored
models, :mod:`ctvlp.models.store` (model and spec; trust of a text tower's own code decided there), and parses
the saved :class:`~ctvlp.train.config.TrainConfig` as well, for what uses the whole run config (``ctvlp eval``
reads its evaluation settings; a retrained run its recipe).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from ctvlp.config import ConfigError, from_dict
from ctvlp.data.preprocess import PreprocessConfig
from ctvlp.models.store import CheckpointError, ModelSpec, load_checkpoint, model_from_checkpoint
from ctvlp.models.vlp import VisionLanguageModel
from ctvlp.train.config import TrainConfig


@dataclass
class Trained:
    """A model in eval mode with everything its checkpoint carries about it."""

    model: VisionLanguageModel
    spec: ModelSpec
    config: TrainConfig

    @property
    def preprocess(self) -> PreprocessConfig:
        return self.spec.preprocess

    @property
    def label_names(self) -> list[str]:
        return self.spec.label_names

    @property
    def step(self) -> int:
        return self.spec.step

    @property
    def path(self) -> str:
        return self.spec.path


def load_trained(path: str | os.PathLike, device: torch.device | str = "cpu",
                 trust_remote_code: bool = False) -> Trained:
    """The model of checkpoint ``path`` (a ``step-*.pt`` file, or a run folder: its latest checkpoint).
    ``trust_remote_code``: let a text tower that ships its own Python code run it."""
    state = load_checkpoint(path)
    try:
        cfg = from_dict(TrainConfig, state["config"])
    except (ConfigError, TypeError, ValueError, KeyError) as err:
        raise CheckpointError(state["path"], f"its config does not fit this ctvlp: {err}") from None
    model, spec = model_from_checkpoint(state, trust_remote_code)
    return Trained(model=model.to(device), spec=spec, config=cfg)
