"""`load_model`: a checkpoint file, a run folder or an export folder -> :class:`CtvlpModel`."""

from __future__ import annotations

import os

import torch

from ctvlp.inference.export import is_export, load_export
from ctvlp.inference.model import CtvlpModel, ModelSpec


def load_model(path: str | os.PathLike, device: torch.device | str = "cpu", max_voxels: int | None = None,
               trust_remote_code: bool = False) -> CtvlpModel:
    """The model at ``path``: a ``step-*.pt`` checkpoint, a run folder (its latest checkpoint, through
    :func:`ctvlp.train.restore.load_trained`) or a folder written by ``ctvlp export``. ``max_voxels``:
    the input size limit (see :mod:`ctvlp.inference.inputs`). Loading runs no code from the files;
    ``trust_remote_code=True`` lets a text tower that ships its own Python code (``auto_map``) run it."""
    if is_export(path):
        return load_export(path, device, max_voxels, trust_remote_code)
    from ctvlp.train.restore import load_trained

    trained = load_trained(path, device, trust_remote_code)
    spec = ModelSpec(preprocess=trained.preprocess, sampler=trained.config.eval.sampler,
                     prompt_style=trained.config.eval.prompt_style, label_names=trained.label_names,
                     recipe=trained.config.recipe, step=trained.step, path=trained.path)
    return CtvlpModel(trained.model, spec, device, max_voxels)
