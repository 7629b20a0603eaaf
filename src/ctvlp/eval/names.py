"""What ``ctvlp eval`` and :class:`~ctvlp.eval.config.EvalConfig` accept by name -- tasks and prompt
styles -- importable without torch or numpy, so that the CLI lists them in its help at once. The code
behind each name lives in :mod:`ctvlp.eval.suite` (the core tasks), :mod:`ctvlp.eval.run`
(``EXTRA_TASKS``, one function per name of :data:`EVAL_TASKS`) and :mod:`ctvlp.eval.prompts`.
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable

import yaml

CORE_TASKS: tuple[str, ...] = ("zeroshot", "retrieval", "probe")
"""The tasks every model can do: zero-shot classification, volume-report retrieval, a linear probe."""
EVAL_TASKS: tuple[str, ...] = ("organs", "segmentation", "generation", "robustness", "seg_probe", "real_masks",
                                "generation_probe")
"""The other tasks (``EvalConfig.tasks``), some only for models with the part they need."""

LABEL_HEAD = "label_head"
"""The style name that scores each label with the model's own label head instead of prompt pairs:
sigmoid(t cos(v, u_k) + b), u_k the embedding of "<label>." (Uniferum's labels as prompts; models
built with ``label_prompts``)."""
CORPUS = "corpus"
"""The style mined from the training reports by :func:`ctvlp.eval.prompts.corpus_style`
(``EvalConfig.corpus_split``); a model trained with it carries it (:func:`ctvlp.eval.prompts.prompt_set`)."""


def packaged_prompts() -> Traversable:
    """The packaged prompt file, ``ctvlp/data/resources/prompts.yaml``."""
    return resources.files("ctvlp.data.resources").joinpath("prompts.yaml")


def prompt_style_names() -> tuple[str, ...]:
    """Every style name ``--prompt-style`` takes without a ``--prompts`` file: the packaged file's
    styles, :data:`LABEL_HEAD` and :data:`CORPUS`."""
    return (*yaml.safe_load(packaged_prompts().read_text())["styles"], LABEL_HEAD, CORPUS)
