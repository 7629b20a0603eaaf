"""Inference: a trained model applied to any CT file (see docs/inference.md).

``ctvlp.load_model(path)`` -> :class:`CtvlpModel` with ``encode_volume``, ``encode_text``, ``zero_shot``,
``segment`` and ``generate_report``; ``export_model`` writes a self-contained folder. Reading a stored model
(checkpoint or export) is :mod:`ctvlp.models.store`'s, below training and inference.
"""

from ctvlp.inference.export import export_model
from ctvlp.inference.inputs import read_ct
from ctvlp.inference.load import load_model
from ctvlp.inference.model import CtvlpModel, Encoding

__all__ = ["CtvlpModel", "Encoding", "export_model", "load_model", "read_ct"]
