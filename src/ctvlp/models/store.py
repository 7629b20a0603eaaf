"""The one reader of stored models: a checkpoint file, a run folder or an export folder -> (model, spec).

Two layouts are read here, below training and inference, which both load through :func:`read_model` (or
:func:`model_from_checkpoint` on a checkpoint already read); ``ctvlp.train.checkpoint`` writes checkpoints,
``ctvlp.inference.export`` writes exports.

**Checkpoint** (``OUT/checkpoints/step-0000100.pt``, one ``torch.save`` file): ``format``/``version``
(:data:`FORMAT`, :data:`FORMAT_VERSION`), ``config`` (the run's resolved config as a plain dict),
``preprocess``, ``tokenizer``, ``label_names``, ``prompts``, ``model``, ``optimizer``, ``scheduler``,
``step``, ``epoch``, ``batch_in_epoch``, ``rng`` (see ``ctvlp.train.checkpoint``). Everything in it is a tensor
or a plain value: it is read with ``torch.load(weights_only=True)`` only (:func:`load_checkpoint`), so a
crafted file cannot run code when loaded; format 1 (numpy objects in ``rng``) needed unpickling and is
refused, like any file that does.

**Export** (a folder, ``ctvlp export``): ``config.json`` {"format": :data:`EXPORT_FORMAT`, "format_version",
"ctvlp_version", "recipe", "step", "source", "model" (ModelConfig), "preprocess", "sampler" (the evaluation
SamplerConfig), "prompt_style", "label_names", "prompts"}, ``model.safetensors`` (every weight but the text
encoder's, ``text.model.*``) and ``text/`` (``TextTower.save_pretrained``). Only safetensors and JSON are read; a
``text/`` with just a pickle ``pytorch_model.bin`` is refused unread.

Of a checkpoint's config only what the model needs is read -- ``model`` (ModelConfig), ``recipe``, and of
``eval`` the ``sampler`` and ``prompt_style`` -- so this reader needs neither the trainer's nor the
evaluator's config class (``ctvlp.recipes.run`` parses the whole run config where a caller needs it).
The model is built once with its as-trained config, its prompt styles and a text tower loaded without the
hub: a checkpoint's encoder weights come from the file (``pretrained`` off; a hub-id tower still needs its
config from the hub cache), an export's from ``text/``. A text model's own Python code (``auto_map``) runs
only when the caller passes ``trust_remote_code=True`` or, for a checkpoint, when its text tower is exactly
the one its recipe trusts (:func:`ctvlp.models.text.recipe_trusts`): neither file can ask for it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from ctvlp import __version__
from ctvlp.config import ConfigError, from_dict
from ctvlp.data.preprocess import PreprocessConfig
from ctvlp.data.sampling import SamplerConfig
from ctvlp.errors import CtvlpError
from ctvlp.models.text import recipe_trusts
from ctvlp.models.vlp import ModelConfig, VisionLanguageModel

FORMAT = "ctvlp-checkpoint"
FORMAT_VERSION = 2
EXPORT_FORMAT = "ctvlp-export"
EXPORT_VERSION = 1
CONFIG = "config.json"
"""An export's config file."""
WEIGHTS = "model.safetensors"
"""An export's weights, every one but the text encoder's."""
TEXT_DIR = "text"
"""An export's text tower folder."""
TEXT_ENCODER = "text.model."
"""Prefix of the weights ``text/`` holds (not repeated in model.safetensors)."""
TEXT_FILES = ("config.json", "model.safetensors")
"""What ``text/`` must hold for the encoder (Hugging Face config, safetensors weights)."""
_NAME = re.compile(r"^step-(\d{7,})\.pt$")
_UNSAFE = re.compile(r"Unsupported global: GLOBAL (\S+)")


class CheckpointError(CtvlpError):
    """A stored model (checkpoint or export) that cannot be read or is not one of this ctvlp's formats."""


@dataclass
class ModelSpec:
    """What using a stored model needs besides the weights (from a checkpoint or an export's config.json)."""

    preprocess: PreprocessConfig
    sampler: SamplerConfig
    """The evaluation sampler (``config.eval.sampler``)."""
    prompt_style: str
    label_names: list[str]
    recipe: str
    step: int
    path: str


# -- checkpoint files -----------------------------------------------------------------------------
def list_checkpoints(folder: Path) -> list[Path]:
    """Checkpoints in ``folder``, oldest first (by step)."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(folder: Path) -> Path | None:
    found = list_checkpoints(folder)
    return found[-1] if found else None


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint file (or the latest one in a run/checkpoints folder), checking its format."""
    path = Path(path)
    if path.is_dir():
        folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
        found = latest_checkpoint(folder)
        if found is None:
            raise CheckpointError(path, "no checkpoint (step-NNNNNNN.pt) in this folder")
        path = found
    if not path.is_file():
        raise CheckpointError(path, "no such checkpoint file")
    state = _read(path)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(path, "not a ctvlp checkpoint")
    if state.get("version") != FORMAT_VERSION:
        raise CheckpointError(path, f"checkpoint format version {state.get('version')} (written by ctvlp "
                                    f"{state.get('ctvlp_version')}); this ctvlp {__version__} reads version "
                                    f"{FORMAT_VERSION}")
    state["path"] = str(path)
    return state


def _read(path: Path) -> object:
    """``torch.load(weights_only=True)``: tensors and plain values only; anything else is refused unread."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        unsafe = _UNSAFE.search(str(err))
        if unsafe is None:
            raise CheckpointError(path, "not a readable checkpoint (truncated or corrupt?): not a torch.save "
                                        "file of tensors and plain values") from None
        raise CheckpointError(path, f"refused: reading it would unpickle {unsafe.group(1)}, which can run code; "
                                    f"ctvlp reads checkpoints with torch.load(weights_only=True) only. A checkpoint "
                                    f"of format 1 (older ctvlp) needs unpickling too: train it again with this "
                                    f"ctvlp") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(path, f"not a readable checkpoint (truncated or corrupt?): {reason}") from None


def model_from_checkpoint(state: dict, trust_remote_code: bool = False) -> tuple[VisionLanguageModel, ModelSpec]:
    """The model (in eval mode, on the CPU) and spec of a checkpoint read by :func:`load_checkpoint`."""
    where = state["path"]
    try:
        config = state["config"]
        model_cfg = from_dict(ModelConfig, config["model"], "model.")
        spec = ModelSpec(preprocess=PreprocessConfig.from_dict(state["preprocess"]),
                         sampler=from_dict(SamplerConfig, config["eval"]["sampler"], "eval.sampler."),
                         prompt_style=_text(config["eval"]["prompt_style"], "eval.prompt_style"),
                         label_names=list(state.get("label_names") or []), recipe=_text(config["recipe"], "recipe"),
                         step=int(state["step"]), path=where)
    except (ConfigError, TypeError, ValueError, KeyError) as err:
        raise CheckpointError(where, f"its config does not fit this ctvlp: {err}") from None
    trust = trust_remote_code or recipe_trusts(spec.recipe, model_cfg.text)
    text = dataclasses.replace(model_cfg.text, pretrained=False, trust_remote_code=trust)
    model = VisionLanguageModel(model_cfg, prompts=state.get("prompts"), text=text)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        raise CheckpointError(where, f"weights do not fit the model its config describes: "
                                     f"{str(err).splitlines()[0]}") from None
    return model.eval(), spec


def _text(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{field}: expected a string, got {value!r}")
    return value


# -- export folders -------------------------------------------------------------------------------
def is_export(path: str | os.PathLike) -> bool:
    path = Path(path)
    return path.is_dir() and (path / CONFIG).is_file() and (path / WEIGHTS).is_file()


def _export_config(folder: Path) -> dict:
    try:
        config = json.loads((folder / CONFIG).read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(folder / CONFIG, f"unreadable export config ({err})") from None
    if not isinstance(config, dict) or config.get("format") != EXPORT_FORMAT:
        raise CheckpointError(folder / CONFIG, f"not a ctvlp export (format is not {EXPORT_FORMAT!r})")
    if config.get("format_version") != EXPORT_VERSION:
        raise CheckpointError(folder, f"export format version {config.get('format_version')} (written by ctvlp "
                                      f"{config.get('ctvlp_version')}); this ctvlp {__version__} reads version "
                                      f"{EXPORT_VERSION}: export the checkpoint again with this ctvlp")
    return config


def _check_text_tower(folder: Path) -> None:
    """``text/`` holds the encoder's config and safetensors weights; a pickle ``.bin`` is never read."""
    text = folder / TEXT_DIR
    if not text.is_dir():
        raise CheckpointError(folder, f"export has no text tower: {TEXT_DIR}/ is missing; export the checkpoint "
                                      f"again (ctvlp export)")
    missing = [f"{TEXT_DIR}/{name}" for name in TEXT_FILES if not (text / name).is_file()]
    if not missing:
        return
    pickles = sorted(f"{TEXT_DIR}/{p.name}" for p in text.glob("*.bin"))
    refused = f" ({', '.join(pickles)} is a pickle file, which ctvlp never reads: it could run code)" if pickles else ""
    raise CheckpointError(folder, f"export's text tower is incomplete: {', '.join(missing)} missing{refused}; "
                                  f"export the checkpoint again (ctvlp export)")


def model_from_export(folder: str | os.PathLike, trust_remote_code: bool = False,
                      ) -> tuple[VisionLanguageModel, ModelSpec]:
    """The model (in eval mode, on the CPU) and spec of an export folder (see the module docstring)."""
    folder = Path(folder)
    config = _export_config(folder)
    _check_text_tower(folder)
    try:
        model_cfg = from_dict(ModelConfig, config["model"], "model.")
        spec = ModelSpec(preprocess=PreprocessConfig.from_dict(config["preprocess"]),
                         sampler=from_dict(SamplerConfig, config["sampler"], "sampler."),
                         prompt_style=config["prompt_style"], label_names=list(config["label_names"]),
                         recipe=config["recipe"], step=int(config["step"]), path=str(folder))
    except (ConfigError, KeyError, TypeError, ValueError) as err:
        raise CheckpointError(folder / CONFIG, f"its config does not fit this ctvlp: {err}") from None
    text = dataclasses.replace(model_cfg.text, name=str(folder / TEXT_DIR), pretrained=True,
                               trust_remote_code=trust_remote_code)
    model = VisionLanguageModel(model_cfg, prompts=config.get("prompts"), text=text)
    missing, unexpected = model.load_state_dict(load_file(folder / WEIGHTS), strict=False)
    wrong = [k for k in missing if not k.startswith(TEXT_ENCODER)] + list(unexpected)
    if wrong:
        raise CheckpointError(folder / WEIGHTS, f"weights do not fit the model its config describes: {wrong[:5]}")
    return model.eval(), spec


# -- either ---------------------------------------------------------------------------------------
def read_model(path: str | os.PathLike, device: torch.device | str = "cpu", trust_remote_code: bool = False,
               ) -> tuple[VisionLanguageModel, ModelSpec]:
    """The model at ``path`` in eval mode on ``device``, and its spec: a ``step-*.pt`` checkpoint, a run folder
    (its latest checkpoint) or a folder written by ``ctvlp export``. Loading runs no code from the files;
    ``trust_remote_code=True`` lets a text tower that ships its own Python code (``auto_map``) run it."""
    if is_export(path):
        model, spec = model_from_export(path, trust_remote_code)
    else:
        model, spec = model_from_checkpoint(load_checkpoint(path), trust_remote_code)
    return model.to(device), spec
