"""`ctvlp export`: a checkpoint as a self-contained folder that loads offline without its TrainConfig.

Layout of ``DIR``::

    config.json          {"format": "ctvlp-export", "format_version": 1, "ctvlp_version", "recipe", "step",
                          "source" (the checkpoint), "model" (ModelConfig), "preprocess" (PreprocessConfig),
                          "sampler" (the evaluation SamplerConfig), "prompt_style", "label_names",
                          "prompts" (the model's own prompt styles, e.g. the mined ``corpus`` one)}
    model.safetensors    every weight of the model except the text encoder's (``text.model.*``)
    text/                the text tower (``TextTower.save_pretrained``): Hugging Face encoder config and
                         weights, tokenizer files, text_tower.json

:func:`ctvlp.models.store.read_model` (the one reader of stored models; ``ctvlp.load_model``) reads it back
with its text tower from ``text/`` and refuses a folder of another ``format_version`` (re-export the checkpoint
with this ctvlp). Nothing in the folder can run code: the weights are safetensors only, the configs are JSON, and
a text model's own Python code (``auto_map``) runs only when the caller passes ``trust_remote_code=True`` -- the
folder's config cannot ask for it.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import save_file

from ctvlp import __version__
from ctvlp.config import to_dict
from ctvlp.fsutil import atomic_path, check_replaceable
from ctvlp.inference.model import CtvlpModel
from ctvlp.models.store import CONFIG, EXPORT_FORMAT, EXPORT_VERSION, TEXT_DIR, TEXT_ENCODER, WEIGHTS


def export_model(model: CtvlpModel, out: str | Path) -> Path:
    """Write ``model`` (from :func:`ctvlp.load_model`) to the folder ``out``; returns it. The folder is
    written under a temporary name and renamed when complete (it replaces an earlier export there; any
    other non-empty folder is refused), so a killed export never leaves a half folder that loads."""
    out = Path(out)
    check_replaceable(out, CONFIG, EXPORT_FORMAT)
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
    config = {"format": EXPORT_FORMAT, "format_version": EXPORT_VERSION, "ctvlp_version": __version__,
              "recipe": spec.recipe, "step": spec.step, "source": spec.path, "model": to_dict(net.cfg),
              "preprocess": spec.preprocess.to_dict(), "sampler": to_dict(spec.sampler),
              "prompt_style": spec.prompt_style, "label_names": list(spec.label_names), "prompts": net.prompts}
    (out / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
