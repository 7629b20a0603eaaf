"""Inference: a trained model applied to any CT file (see docs/inference.md).

``ctvlp.load_model(path)`` -> :class:`CtvlpModel` with ``encode_volume``, ``encode_text``, ``zero_shot``,
``segment`` and ``generate_report``; ``export_model`` writes a self-contained folder.
"""

from ctvlp.inference.export import export_model, load_export
from ctvlp.inference.inputs import read_ct
from ctvlp.inference.load import load_model
from ctvlp.inference.model import CtvlpModel, Encoding, ModelSpec

__all__ = ["CtvlpModel", "Encoding", "ModelSpec", "export_model", "load_export", "load_model", "read_ct"]
