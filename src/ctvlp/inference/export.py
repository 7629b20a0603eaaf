"""`ctvlp export`: a checkpoint as a self-contained folder that loads offline without its TrainConfig.

Layout of ``DIR``::

    config.json          {"format": "ctvlp-export", "format_version": 1, "ctvlp_version", "recipe", "step",
                          "source" (the checkpoint), "model" (ModelConfig), "preprocess" (PreprocessConfig),
                          "sampler" (the evaluation SamplerConfig), "prompt_style", "label_names",
                          "prompts" (the model's own prompt styles, e.g. the mined ``corpus`` one)}
    model.safetensors    every weight of the model except the text encoder's (``text.model.*``)
    text/                the text tower (``TextTower.save_pretrained``): Hugging Face encoder config and
                         weights, tokenizer files, text_tower.json

:func:`load_export` rebuilds the model with its text tower read from ``text/`` and refuses a folder of
another ``format_version`` (re-export the checkpoint with this ctvlp). Nothing in the folder can run code:
the weights are safetensors only (a ``text/`` with just a pickle ``pytorch_model.bin`` is refused unread),
the configs are JSON, and a text model's own Python code (``auto_map``) runs only when the caller passes
``trust_remote_code=True`` -- the folder's config cannot ask for it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ctvlp import __version__
from ctvlp.config import ConfigError, from_dict, to_dict
from ctvlp.data.preprocess import PreprocessConfig
from ctvlp.data.sampling import SamplerConfig
from ctvlp.fsutil import atomic_path, check_replaceable
from ctvlp.inference.model import CtvlpModel, ModelSpec
from ctvlp.models.vlp import ModelConfig, VisionLanguageModel
from ctvlp.train.checkpoint import CheckpointError

FORMAT = "ctvlp-export"
FORMAT_VERSION = 1
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
TEXT_DIR = "text"
TEXT_ENCODER = "text.model."
"""Prefix of the weights ``text/`` holds (not repeated in model.safetensors)."""
TEXT_FILES = ("config.json", "model.safetensors")
"""What ``text/`` must hold for the encoder (Hugging Face config, safetensors weights)."""


def export_model(model: CtvlpModel, out: str | Path) -> Path:
    """Write ``model`` (from :func:`ctvlp.load_model`) to the folder ``out``; returns it. The folder is
    written under a temporary name and renamed when complete (it replaces an earlier export there; any
    other non-empty folder is refused), so a killed export never leaves a half folder that loads."""
    out = Path(out)
    check_replaceable(out, CONFIG, FORMAT)
    with atomic_path(out) as tmp:
        tmp.mkdir()
        _write_export(model, tmp)
    return out


def _write_export(model: CtvlpModel, out: Path) -> None:
    net, spec = model.model, model.spec
    net.text.save_pretrained(out / TEXT_DIR)
    weights = {k: v.detach().cpu().clone().contiguous() for k, v in net.state_dict().items()
               if not k.startswith(TEXT_ENCODER)}  # clone: safetensors refuses tensors that share memory
    save_file(weights, out / WEIGHTS)
    config = {"format": FORMAT, "format_version": FORMAT_VERSION, "ctvlp_version": __version__,
              "recipe": spec.recipe, "step": spec.step, "source": spec.path, "model": to_dict(net.cfg),
              "preprocess": spec.preprocess.to_dict(), "sampler": to_dict(spec.sampler),
              "prompt_style": spec.prompt_style, "label_names": list(spec.label_names), "prompts": net.prompts}
    (out / CONFIG).write_text(json.dumps(config, indent=2) + "\n")


def is_export(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() and (path / CONFIG).is_file() and (path / WEIGHTS).is_file()


def _read_config(folder: Path) -> dict:
    try:
        config = json.loads((folder / CONFIG).read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(folder / CONFIG, f"unreadable export config ({err})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(folder / CONFIG, f"not a ctvlp export (format is not {FORMAT!r})")
    if config.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(folder, f"export format version {config.get('format_version')} (written by ctvlp "
                                      f"{config.get('ctvlp_version')}); this ctvlp {__version__} reads version "
                                      f"{FORMAT_VERSION}: export the checkpoint again with this ctvlp")
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


def load_export(folder: str | Path, device: torch.device | str = "cpu", max_voxels: int | None = None,
                trust_remote_code: bool = False) -> CtvlpModel:
    """The :class:`CtvlpModel` of an export folder (see the module docstring). ``trust_remote_code``: let a
    text tower that ships its own Python code run it (the folder's own config cannot turn this on)."""
    folder = Path(folder)
    config = _read_config(folder)
    _check_text_tower(folder)
    try:
        model_cfg = from_dict(ModelConfig, config["model"])
        spec = ModelSpec(preprocess=PreprocessConfig.from_dict(config["preprocess"]),
                         sampler=from_dict(SamplerConfig, config["sampler"]), prompt_style=config["prompt_style"],
                         label_names=list(config["label_names"]), recipe=config["recipe"], step=int(config["step"]),
                         path=str(folder))
    except (ConfigError, KeyError, TypeError, ValueError) as err:
        raise CheckpointError(folder / CONFIG, f"its config does not fit this ctvlp: {err}") from None
    text = dataclasses.replace(model_cfg.text, name=str(folder / TEXT_DIR), pretrained=True,
                               trust_remote_code=trust_remote_code)
    model = VisionLanguageModel(dataclasses.replace(model_cfg, text=text))
    missing, unexpected = model.load_state_dict(load_file(folder / WEIGHTS), strict=False)
    wrong = [k for k in missing if not k.startswith(TEXT_ENCODER)] + list(unexpected)
    if wrong:
        raise CheckpointError(folder / WEIGHTS, f"weights do not fit the model its config describes: {wrong[:5]}")
    model.cfg = model_cfg
    model.prompts = dict(config.get("prompts") or {})
    return CtvlpModel(model, spec, device, max_voxels)
