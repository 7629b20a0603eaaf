"""What ``ctvlp eval`` and :class:`~ctvlp.eval.config.EvalConfig` accept by name -- tasks -- importable
without torch or numpy, so that the CLI lists them in its help at once. The code behind each name lives in
:mod:`ctvlp.eval.suite` (the core tasks, and ``EXTRA_TASKS``: one function per name of :data:`EVAL_TASKS`); the prompt-style names are :mod:`ctvlp.data.prompt_names`'.
"""

from __future__ import annotations

CORE_TASKS: tuple[str, ...] = ("zeroshot", "retrieval", "probe")
"""The tasks every model can do: zero-shot classification, volume-report retrieval, a linear probe."""
EVAL_TASKS: tuple[str, ...] = ("organs", "segmentation", "generation", "robustness", "seg_probe", "real_masks",
                                "generation_probe")
"""The other tasks (``EvalConfig.tasks``), some only for models with the part they need."""
