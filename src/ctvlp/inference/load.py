"""`load_model`: a checkpoint file, a run folder or an export folder -> :class:`CtvlpModel`."""

from __future__ import annotations

import os

import torch

from ctvlp.inference.model import CtvlpModel
from ctvlp.models.store import read_model


def load_model(path: str | os.PathLike, device: torch.device | str = "cpu", max_voxels: int | None = None,
               trust_remote_code: bool = False) -> CtvlpModel:
    """The model at ``path``: a ``step-*.pt`` checkpoint, a run folder (its latest checkpoint) or a folder
    written by ``ctvlp export``, read by :func:`ctvlp.models.store.read_model`. ``max_voxels``: the input size
    limit (see :mod:`ctvlp.inference.inputs`). Loading runs no code from the files; ``trust_remote_code=True``
    lets a text tower that ships its own Python code (``auto_map``) run it."""
    model, spec = read_model(path, device, trust_remote_code)
    return CtvlpModel(model, spec, device, max_voxels)
