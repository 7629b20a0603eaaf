"""What a training config needs from its data, checked against the cache before the first step.

Each loss term reads something the dataset must provide: report text (every image-text objective),
per-volume labels (``masked_bce``; SWCA with label affinity), or segmentation masks beyond the body
mask (``tversky``). A recipe pointed at a cache that lacks one stops with a message naming what is
missing, where it was looked for, and which datasets provide it, instead of training on zeros.
"""

from __future__ import annotations

import json
import warnings

import pandas as pd

from ctvlp.config import ConfigError
from ctvlp.data.cache import Cache
from ctvlp.data.manifest import LABEL_PREFIX
from ctvlp.data.preprocess import PreprocessConfig
from ctvlp.data.reports import canonical_organ
from ctvlp.errors import BadDatasetError
from ctvlp.losses.registry import loss_class
from ctvlp.train.config import TrainConfig

PROVIDERS = {  # one entry per ctvlp.losses.base.NEEDS
    "report text": "CT-RATE (findings/impressions), RadGenome-ChestCT region reports, a generic CSV/JSONL "
                   "with a report column, or `ctvlp synth`",
    "labels": "CT-RATE's multi_abnormality_labels.csv, RAD-ChestCT or any CSV with label columns "
              "(mapped by a label-mapping file), or `ctvlp synth`",
    "masks": "RadGenome-ChestCT region masks, TotalSegmentator outputs listed in the manifest's masks "
             "column, or `ctvlp synth`",
}


def needs(cfg: TrainConfig) -> dict[str, list[str]]:
    """What the config's objectives need (each loss says, ``ctvlp.losses.base.Loss.needs``) -> the terms
    that need it, in first-use order."""
    out: dict[str, list[str]] = {}
    for term in cfg.all_terms:
        wanted = dict.fromkeys(what for loss in cfg.objectives.values() if term in loss.terms
                               for what in loss_class(term).needs(loss.options.get(term, {})))
        for what in wanted:
            out.setdefault(what, []).append(term)
    return out


def _mask_names(index: pd.DataFrame) -> set[str]:
    """Every mask name some volume of ``index`` has."""
    names = index["mask_names"].dropna().map(json.loads) if "mask_names" in index else pd.Series([], dtype=object)
    return set().union(*names) if len(names) else set()


def _has(index: pd.DataFrame, what: str) -> bool:
    if what == "report text":
        text = [c for c in ("findings", "impressions") if c in index]
        return bool(text) and bool(index[text].fillna("").astype(str).apply(lambda s: s.str.strip() != "").any().any())
    if what == "labels":
        return bool(index[[c for c in index if c.startswith(LABEL_PREFIX)]].notna().any().any())
    return bool(_mask_names(index) - {"body"})


def check_requirements(cfg: TrainConfig, cache: Cache) -> None:
    """BadDatasetError naming the first need of ``cfg`` that the cache's training split does not meet."""
    train = cache.index[cache.index["split"] == cfg.data.train_split]
    for what, terms in needs(cfg).items():
        if not _has(train, what):
            raise BadDatasetError(cache.root, f"recipe {cfg.recipe!r} needs {what} for its {', '.join(terms)} "
                                              f"loss, and the {cfg.data.train_split!r} split of this cache has none; "
                                              f"datasets that provide {what}: {PROVIDERS[what]}")
    sampler = cfg.data.sampler
    if "masks" in needs(cfg) and sampler.include_masks and sampler.mask_names is not None:
        have = _mask_names(train)
        missing = [n for n in sampler.mask_names if n not in have]
        organs = [n for n in missing if canonical_organ(n) is not None]
        if organs or (missing and len(missing) == len(sampler.mask_names)):
            raise BadDatasetError(cache.root, f"recipe {cfg.recipe!r} trains on masks {organs or missing} that no "
                                              f"volume of the {cfg.data.train_split!r} split of this cache has (their "
                                              f"loss would be 0); the cache's masks: {sorted(have)}; choose with "
                                              f"--set 'data.sampler.mask_names=[...]'")
        if missing:  # finding masks exist only where the finding does: a cohort may have none of one
            warnings.warn(f"recipe {cfg.recipe!r}: no volume of the {cfg.data.train_split!r} split has the finding "
                          f"masks {missing}; they add no loss term", stacklevel=2)
    if sampler.mask_names is not None:  # per-mask Tversky coefficients follow the mask names
        for kind, objective in cfg.objectives.items():
            for key in ("alpha", "beta"):
                value = objective.options.get("tversky", {}).get(key)
                if isinstance(value, (list, tuple)) and len(value) != len(sampler.mask_names):
                    where = "loss" if kind == "pairs" else f"tasks.{kind}"
                    raise ConfigError(f"{where}.options.tversky.{key} has {len(value)} values, one per mask, but "
                                      f"data.sampler.mask_names has {len(sampler.mask_names)}: "
                                      f"{list(sampler.mask_names)}; give one {key} per mask or a single number")


def check_frozen(cfg: TrainConfig, parameter_names: list[str]) -> None:
    """ConfigError naming each ``stages[i].frozen`` prefix that matches none of ``parameter_names``."""
    bad = [(i, prefix) for i, stage in enumerate(cfg.stages) for prefix in stage.frozen
           if not any(name.startswith(prefix) for name in parameter_names)]
    if bad:
        tops = sorted({name.split(".")[0] + "." for name in parameter_names})
        listed = ", ".join(f"stages[{i}].frozen {prefix!r}" for i, prefix in bad)
        raise ConfigError(f"{listed} matches no parameter of the model, so it would freeze nothing; the model's "
                          f"parameters start with {', '.join(tops)}")


def _setting(value) -> str:
    """A preprocessing value as --set and `ctvlp prepare` write it: 1.5,1.5,3 for a tuple, true/false."""
    if isinstance(value, (list, tuple)):
        return ",".join(f"{v:g}" for v in value)
    return str(value).lower() if isinstance(value, bool) else f"{value:g}"


def prepare_flags(config: PreprocessConfig) -> str:
    """The `ctvlp prepare` flags that make a cache with ``config`` (its fields that the flags set)."""
    flags = [f"--spacing {_setting(config.spacing)}", f"--window={_setting(config.hu_window)}"]
    return " ".join(flags + ["--no-crop"] * (not config.crop_to_body) + ["--no-antialias"] * (not config.antialias))


def check_preprocessing(cfg: TrainConfig, cache: Cache, recipe_flags: str | None = None) -> None:
    """BadDatasetError (one line) when the cache was prepared otherwise than ``cfg.data.preprocess``: both
    settings of every field that differs, the `ctvlp prepare` command that makes the right cache (with
    ``recipe_flags``, e.g. ``--recipe ctclip``, where the caller knows them; else the explicit flags) and the
    ``--set`` that accepts this cache instead."""
    want, have = cfg.data.preprocess.to_dict(), cache.config.to_dict()
    differ = [k for k in want if _setting(want[k]) != _setting(have.get(k, want[k]))]
    if not differ:
        return
    cache_says = ", ".join(f"{k} {_setting(have[k])}" for k in differ)
    recipe_says = ", ".join(f"{k} {_setting(want[k])}" for k in differ)
    accept = " ".join(f"--set 'data.preprocess.{k}=[{_setting(have[k])}]'" if isinstance(have[k], list)
                      else f"--set data.preprocess.{k}={_setting(have[k])}" for k in differ)
    flags = recipe_flags or prepare_flags(cfg.data.preprocess)
    raise BadDatasetError(cache.root, f"prepared with {cache_says}, but recipe {cfg.recipe!r} needs {recipe_says}; "
                                      f"make its cache with `ctvlp prepare {flags} --manifest MANIFEST --out "
                                      f"NEW_CACHE`; to train on this one instead: {accept}")
