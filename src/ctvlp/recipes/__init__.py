"""Recipes: one file per method, ``ctvlp/recipes/<name>.py``, whose ``recipe()`` returns the complete
:class:`~ctvlp.recipes.run.RunConfig` of that method (model, text tower, objective, sampler,
optimiser, schedule, evaluation). ``get_recipe(name, debug=False)`` is the way in; ``debug=True``
gives the recipe's tiny variant (:mod:`ctvlp.recipes.debug`); :mod:`ctvlp.recipes.cohort` has the
cohort-size variants of ``ctvlp compare``. The names are listed here, in :data:`NAMES`, so that the CLI
can offer them (``ctvlp train --help``) without importing torch, which the configs' modules import.
"""

from __future__ import annotations

import importlib

from ctvlp.config import ConfigError

NAMES: tuple[str, ...] = ("demo", "ctclip", "sigvlp", "scalevlp", "segvl", "uniferum", "colipri")
"""The recipes: module ``ctvlp.recipes.<name>`` each."""


def list_recipes() -> list[str]:
    return sorted(NAMES)


def get_recipe(name: str, debug: bool = False):
    """The recipe's RunConfig (its debug variant with ``debug=True``); ConfigError naming the recipes
    for an unknown name."""
    if name not in NAMES:
        raise ConfigError(f"unknown recipe {name!r}; recipes: {', '.join(list_recipes())}")
    cfg = importlib.import_module(f"ctvlp.recipes.{name}").recipe()
    if debug:
        # deferred on purpose: the debug variants import the model configs (torch); the registry stays torch-free
        from ctvlp.recipes.debug import debug_variant

        cfg = debug_variant(cfg)
    return cfg
