"""A run's complete config -- training's :class:`~ctvlp.train.config.TrainConfig` plus how its model is
evaluated -- and a trained run back from its checkpoint (:func:`load_trained`).

Training and evaluation are sibling layers that do not import each other, so their configs meet here, above
both: :class:`RunConfig` is a ``TrainConfig`` with one more field, ``eval``
(:class:`~ctvlp.eval.config.EvalConfig`). Every recipe returns one, ``ctvlp train``/``config``/``demo``/
``compare`` run one, and a checkpoint saves one as a plain dict (``to_dict``): the keys are those a
``TrainConfig`` had when it held ``eval`` itself, so ``--set eval.prompt_style=...``, saved configs and the
``--resume`` comparison are unchanged. It answers the two questions training asks of the evaluation settings:
which samplers feed the model (both must agree on its input channels) and which split's reports the ``corpus``
prompt style is mined from.

:func:`load_trained` reads a checkpoint file (or the latest one of a run folder) with the one reader of stored
models, :mod:`ctvlp.models.store` (model and spec; trust of a text tower's own code decided there), and parses
the saved :class:`RunConfig` as well, for what uses the whole run config (``ctvlp eval`` reads its evaluation
settings); :func:`ctvlp.load_model` needs neither and reads the store directly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

from ctvlp.config import ConfigError, from_dict
from ctvlp.data.preprocess import PreprocessConfig
from ctvlp.data.prompt_names import CORPUS
from ctvlp.data.sampling import SamplerConfig
from ctvlp.eval.config import EvalConfig
from ctvlp.models.store import CheckpointError, ModelSpec, load_checkpoint, model_from_checkpoint
from ctvlp.models.vlp import VisionLanguageModel
from ctvlp.train.config import TrainConfig


@dataclass
class RunConfig(TrainConfig):
    """One training run and its evaluation: model, data, objective, optimiser, schedule, checkpoints, evaluation."""

    eval: EvalConfig = field(default_factory=EvalConfig)
    """How the trained model is evaluated (at the end of ``ctvlp train``; ``ctvlp eval`` reads it from the
    checkpoint), and the evaluation sampler and prompt style inference uses."""

    def input_samplers(self) -> dict[str, SamplerConfig]:
        """Training's sampler and evaluation's: both feed the model."""
        return {**super().input_samplers(), "eval.sampler": self.eval.sampler}

    def prompt_corpus(self) -> str | None:
        """``eval.corpus_split`` when the evaluation's prompt style is ``corpus`` (mined once when training
        starts, carried by the checkpoints), else None."""
        return self.eval.corpus_split if self.eval.prompt_style == CORPUS else None


@dataclass
class Trained:
    """A model in eval mode with everything its checkpoint carries about it."""

    model: VisionLanguageModel
    spec: ModelSpec
    config: RunConfig

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
        cfg = from_dict(RunConfig, state["config"])
    except (ConfigError, TypeError, ValueError, KeyError) as err:
        raise CheckpointError(state["path"], f"its config does not fit this ctvlp: {err}") from None
    model, spec = model_from_checkpoint(state, trust_remote_code)
    return Trained(model=model.to(device), spec=spec, config=cfg)
