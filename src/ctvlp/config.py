"""Typed dataclass configs at the edge: to/from plain dicts (saved as YAML/JSON in checkpoints and
run folders) and ``--set a.b=value`` overrides with type checks.

Configs themselves are ordinary dataclasses defined next to the code they configure; these
helpers only walk them. Values in overrides are parsed as YAML scalars/lists (``1e-3``, ``true``,
``[16, 16, 8]``, ``null``) with ``yaml.safe_load`` and then checked against the field's annotation; a
value with a tag that safe loading does not construct (``!!python/object/apply:...``) is refused.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, get_args, get_origin, get_type_hints

import yaml

from ctvlp.errors import CtvlpError


class ConfigError(CtvlpError):
    """An override or saved config that does not fit the config's fields or types."""

    def __init__(self, reason: str):
        super().__init__(None, reason)


def to_dict(cfg) -> dict:
    """Nested plain dict (tuples become lists) of a dataclass config."""
    return _plain(dataclasses.asdict(cfg))


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def from_dict(cls, data: dict, where: str = ""):
    """Build dataclass ``cls`` from a nested dict, checking every key and value type."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {type(data).__name__}")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"{where or cls.__name__}: unknown field(s) {sorted(unknown)}; "
                          f"known: {sorted(names)}")
    kwargs = {k: _coerce(v, hints[k], f"{where}{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where or cls.__name__}: {err}") from None


def _coerce(value, hint, where: str):
    """``value`` checked (and lists turned into tuples, dicts into dataclasses) against ``hint``."""
    origin, args = get_origin(hint), get_args(hint)
    if hint is Any:
        return value
    if dataclasses.is_dataclass(hint):
        return value if isinstance(value, hint) else from_dict(hint, value, where + ".")
    if origin in (typing.Union, types.UnionType):
        for option in args:
            try:
                return _coerce(value, option, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {value!r} is not a {_name(hint)}")
    if origin is Literal:
        if value in args:
            return value
        raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
    if hint is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where}: expected null, got {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list like [1, 2], got {value!r}")
        items = args if not (len(args) == 2 and args[1] is Ellipsis) else (args[0],) * len(value)
        if len(items) != len(value):
            raise ConfigError(f"{where}: expected {len(items)} values, got {len(value)}")
        return tuple(_coerce(v, t, f"{where}[{i}]") for i, (v, t) in enumerate(zip(value, items)))
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)] if args else list(value)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return {k: _coerce(v, args[1], f"{where}.{k}") for k, v in value.items()} if args else dict(value)
    if hint is float and isinstance(value, str):  # PyYAML reads 1e-3 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{where}: {value!r} is not a float") from None
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(hint, type) and isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    raise ConfigError(f"{where}: {value!r} is not a {_name(hint)}")


def _name(hint) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def apply_overrides(cfg, overrides: list[str]):
    """A copy of ``cfg`` with ``key.path=value`` overrides applied, each checked against its field."""
    data = to_dict(cfg)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. optim.lr=1e-3")
        node, parts = data, key.split(".")
        for depth, part in enumerate(parts):
            if not isinstance(node, dict) or part not in node:
                known = sorted(node) if isinstance(node, dict) else []
                raise ConfigError(f"--set {item!r}: {'.'.join(parts[:depth + 1])} is not a config field"
                                  + (f"; fields here: {known}" if known else ""))
            if depth < len(parts) - 1:
                node = node[part]
        try:
            value = yaml.safe_load(raw)  # plain YAML only: a tag like !!python/object is never constructed
        except yaml.constructor.ConstructorError as err:
            raise ConfigError(f"--set {item!r}: {err.problem}; give a plain value (number, string, list, "
                              f"true/false, null)") from None
        except yaml.YAMLError:
            value = raw
        node[parts[-1]] = value
    return from_dict(type(cfg), data)
