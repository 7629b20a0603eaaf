"""The prompt-style names ``--prompt-style`` and :class:`~ctvlp.eval.config.EvalConfig` accept, importable
without torch or numpy, so that the CLI lists them in its help at once: the styles of the packaged prompt file,
:data:`LABEL_HEAD` and :data:`CORPUS`. The code behind them is :mod:`ctvlp.data.prompts` (texts) and
:mod:`ctvlp.models.prompting` (encoding and scoring them with a model).
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable

import yaml

LABEL_HEAD = "label_head"
"""The style name that scores each label with the model's own label head instead of prompt pairs:
sigmoid(t cos(v, u_k) + b), u_k the embedding of "<label>." (Uniferum's labels as prompts; models
built with ``label_prompts``)."""
CORPUS = "corpus"
"""The style mined from the training reports by :func:`ctvlp.data.prompts.corpus_style`
(``EvalConfig.corpus_split``); a model trained with it carries it (:func:`ctvlp.data.prompts.prompt_set`)."""


def packaged_prompts() -> Traversable:
    """The packaged prompt file, ``ctvlp/data/resources/prompts.yaml``."""
    return resources.files("ctvlp.data.resources").joinpath("prompts.yaml")


def prompt_style_names() -> tuple[str, ...]:
    """Every style name ``--prompt-style`` takes without a ``--prompts`` file: the packaged file's
    styles, :data:`LABEL_HEAD` and :data:`CORPUS`."""
    return (*yaml.safe_load(packaged_prompts().read_text())["styles"], LABEL_HEAD, CORPUS)
