"""Recipes: named functions that return a complete :class:`~ctvlp.train.config.TrainConfig`.

``get_recipe(name, debug=False)``; ``debug=True`` shrinks the recipe to a tiny model and input that
train in seconds on a CPU (for tests), keeping its objective, sampler and optimiser choices. The
functions live in :mod:`ctvlp.recipes.library`; their names are listed here, in :data:`NAMES`, so
that the CLI can offer them (``ctvlp train --help``) without importing torch, which the configs'
modules import. The library's other names (``RECIPES``, ``debug_variant``, ``DEMO_WINDOWS``, ...)
are importable from here too; they load it on first use.
"""

from __future__ import annotations

import importlib

NAMES: tuple[str, ...] = ("demo", "ctclip", "sigvlp", "scalevlp", "segvl", "uniferum", "colipri")
"""The recipes, one function of that name each in :mod:`ctvlp.recipes.library` (which refuses to
register one not listed here)."""


def list_recipes() -> list[str]:
    return sorted(NAMES)


def get_recipe(name: str, debug: bool = False):
    """The recipe's TrainConfig (its debug variant with ``debug=True``); ConfigError naming the recipes
    for an unknown name."""
    from ctvlp.config import ConfigError

    if name not in NAMES:
        raise ConfigError(f"unknown recipe {name!r}; recipes: {', '.join(list_recipes())}")
    library = _library()
    cfg = library.RECIPES[name]()
    return library.debug_variant(cfg) if debug else cfg


def _library():
    return importlib.import_module("ctvlp.recipes.library")


def __getattr__(name: str):
    """``RECIPES``, ``debug_variant``, ``train_depth``, ``DEMO_WINDOWS``, ``SEGVL_MASKS``, ... of the library."""
    if name.startswith("__"):
        raise AttributeError(name)
    try:
        return getattr(_library(), name)
    except AttributeError:
        raise AttributeError(f"module 'ctvlp.recipes' has no attribute {name!r}") from None
