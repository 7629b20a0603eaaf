"""Config round trips and `--set` overrides: values typed by the field, unknown keys and wrong types refused."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from ctvlp.config import ConfigError, apply_overrides, from_dict, to_dict
from ctvlp.models.ctvit import ctvit_config
from ctvlp.models.resnet3d import resnet_config
from ctvlp.models.vit3d import vit_config
from ctvlp.models.vlp import ModelConfig
from ctvlp.recipes.run import RunConfig


@dataclass
class Inner:
    lr: float = 1e-3
    patch: tuple[int, int, int] = (4, 8, 8)
    name: Literal["a", "b"] = "a"
    size: tuple[int, int] | None = None


@dataclass
class Outer:
    inner: Inner = field(default_factory=Inner)
    steps: int = 10
    flag: bool = False
    tags: dict[str, float] = field(default_factory=dict)

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError("steps must be >= 1")


def test_round_trip_keeps_types():
    cfg = Outer(Inner(lr=0.5, patch=(1, 2, 3), name="b", size=(64, 32)), steps=3, flag=True, tags={"x": 1.5})
    data = to_dict(cfg)
    assert data["inner"]["patch"] == [1, 2, 3]  # plain lists in YAML/JSON
    assert from_dict(Outer, data) == cfg


def test_overrides_are_typed():
    cfg = apply_overrides(Outer(), ["inner.lr=1e-4", "steps=7", "flag=true", "inner.patch=[2, 16, 16]",
                                    "inner.name=b", "inner.size=[64, 64]"])
    assert cfg.inner.lr == pytest.approx(1e-4) and isinstance(cfg.inner.lr, float)
    assert cfg.steps == 7 and cfg.flag is True and cfg.inner.patch == (2, 16, 16)
    assert cfg.inner.name == "b" and cfg.inner.size == (64, 64)
    assert apply_overrides(cfg, ["inner.size=null"]).inner.size is None
    assert apply_overrides(Outer(), ["inner.lr=3"]).inner.lr == 3.0  # an int where a float is expected


@pytest.mark.parametrize("override, message", [
    ("inner.lrr=1", "inner.lrr is not a config field"),
    ("nothing.lr=1", "nothing is not a config field"),
    ("steps=many", "'many' is not a int"),
    ("steps=1.5", "1.5 is not a int"),
    ("flag=3", "3 is not a bool"),
    ("inner.name=c", "'c' is not one of ['a', 'b']"),
    ("inner.patch=[1, 2]", "expected 3 values"),
    ("steps", "expected KEY=VALUE"),
    ("steps=0", "steps must be >= 1"),
])
def test_bad_overrides_name_the_problem(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        apply_overrides(Outer(), [override])


def test_unknown_saved_field_refused():
    with pytest.raises(ConfigError, match="unknown field"):
        from_dict(Outer, {"steps": 2, "extra": 1})


@pytest.mark.parametrize("tower", ["vit", "resnet", "ctvit"])
def test_retired_fields_of_an_old_checkpoint_are_dropped(tower):
    """A config saved before issue 18 (``eval.every``, ``model.vision.grad_checkpointing``) still loads, to the
    config it would be today; a genuinely unknown key next to them is still refused, and so is an override."""
    vision = {"vit": vit_config("debug"), "resnet": resnet_config(18), "ctvit": ctvit_config("debug")}[tower]
    cfg = RunConfig(model=ModelConfig(vision=vision))
    old = to_dict(cfg)
    old["eval"]["every"] = 50
    old["model"]["vision"]["grad_checkpointing"] = True
    assert from_dict(RunConfig, old) == cfg
    old["eval"]["evry"] = 1
    with pytest.raises(ConfigError, match=r"eval\.: unknown field\(s\) \['evry'\]"):
        from_dict(RunConfig, old)
    with pytest.raises(ConfigError, match="eval.every is not a config field"):
        apply_overrides(cfg, ["eval.every=5"])
