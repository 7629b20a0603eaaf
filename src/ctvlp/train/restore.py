"""A trained model back from its checkpoint: the one place that turns a checkpoint into a model.

:func:`load_trained` reads a checkpoint file (or the latest one of a run folder), rebuilds the
:class:`~ctvlp.models.vlp.VisionLanguageModel` from the saved :class:`~ctvlp.train.config.TrainConfig`
and loads its weights. The text tower is built with ``pretrained=False``: its weights come from the
checkpoint, so the packaged encoder is not read twice (a hub-id tower still needs its config from
the hub cache; ``ctvlp export`` writes everything, for fully offline use). The checkpoint is read with
``torch.load(weights_only=True)`` and its config cannot turn on ``trust_remote_code``: only the caller can,
or ctvlp's own recipe: a checkpoint whose text tower is exactly the one its registered recipe names with
``trust_remote_code`` (same hub id, same pinned revision; CXR-BERT in ``ctclip``, ``segvl``, ``colipri``)
loads with that trust, because the code that runs is then chosen by the reviewed recipe, not by the file.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import torch

from ctvlp.config import ConfigError, from_dict
from ctvlp.data.preprocess import PreprocessConfig
from ctvlp.models.vlp import VisionLanguageModel
from ctvlp.train.checkpoint import CheckpointError, load_checkpoint
from ctvlp.train.config import TrainConfig


@dataclass
class Trained:
    """A model in eval mode with everything its checkpoint carries about it."""

    model: VisionLanguageModel
    config: TrainConfig
    preprocess: PreprocessConfig
    label_names: list[str]
    step: int
    path: str


def recipe_trusts(cfg: TrainConfig) -> bool:
    """Whether ``cfg``'s text tower is the one its registered recipe trusts to run its own code: the recipe
    sets ``trust_remote_code`` for this very hub id at a pinned revision (a file cannot widen that)."""
    from ctvlp.recipes import NAMES, get_recipe

    text = cfg.model.text
    if cfg.recipe not in NAMES or not text.trust_remote_code or text.revision is None:
        return False
    own = get_recipe(cfg.recipe).model.text
    return own.trust_remote_code and (own.name, own.revision) == (text.name, text.revision)


def load_trained(path: str | os.PathLike, device: torch.device | str = "cpu",
                 trust_remote_code: bool = False) -> Trained:
    """The model of checkpoint ``path`` (a ``step-*.pt`` file, or a run folder: its latest checkpoint).
    ``trust_remote_code``: let a text tower that ships its own Python code run it."""
    state = load_checkpoint(path)
    where = state["path"]
    try:
        cfg = from_dict(TrainConfig, state["config"])
        preprocess = PreprocessConfig.from_dict(state["preprocess"])
    except (ConfigError, TypeError, ValueError, KeyError) as err:
        raise CheckpointError(where, f"its config does not fit this ctvlp: {err}") from None
    trust = trust_remote_code or recipe_trusts(cfg)
    text = dataclasses.replace(cfg.model.text, pretrained=False, trust_remote_code=trust)
    model_cfg = dataclasses.replace(cfg.model, text=text)
    model = VisionLanguageModel(model_cfg)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        raise CheckpointError(where, f"weights do not fit the model its config describes: "
                                     f"{str(err).splitlines()[0]}") from None
    model.cfg = cfg.model  # the config as trained (pretrained and trust only decided how it was loaded)
    model.prompts = dict(state.get("prompts") or {})
    return Trained(model=model.to(device).eval(), config=cfg, preprocess=preprocess,
                   label_names=list(state.get("label_names") or []), step=int(state["step"]), path=where)
