"""Typed dataclass configs at the edge: to/from plain dicts (saved as YAML/JSON in checkpoints and
run folders), ``--set a.b=value`` overrides with type checks, and each field's help text.

Configs themselves are ordinary dataclasses defined next to the code they configure; these
helpers only walk them. Values in overrides are parsed as YAML scalars/lists (``1e-3``, ``true``,
``[16, 16, 8]``, ``null``) with ``yaml.safe_load`` and then checked against the field's annotation; a
value with a tag that safe loading does not construct (``!!python/object/apply:...``) is refused. A
field's help is the docstring written under it in its class (:func:`field_help`);
:func:`to_yaml_with_help` prints a config with it (`ctvlp config`).
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import re
import textwrap
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
    return _plain(cfg)


def _plain(value):
    """``value`` with dataclasses as dicts and tuples as lists, all the way down."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


RETIRED_FIELDS: dict[str, frozenset[str]] = {
    # issue 18: read by nothing (evaluation runs once, at the end of training).
    "EvalConfig": frozenset({"every"}),
    # issue 18: TrainConfig.grad_checkpointing (-> the tower's set_grad_checkpointing) is the one switch.
    "ViT3dConfig": frozenset({"grad_checkpointing"}),
    "ResNet3dConfig": frozenset({"grad_checkpointing"}),
    "CTViTConfig": frozenset({"grad_checkpointing"}),
}
"""Fields a config class (by class name) no longer has, which :func:`from_dict` drops without a word so
that checkpoints and exports saved before their removal still load; any other unknown key is refused.
The one place to list a removed field (an override ``--set eval.every=...`` is still refused: overrides
only name fields the config has)."""


def from_dict(cls, data: dict, where: str = ""):
    """Build dataclass ``cls`` from a nested dict, checking every key and value type (keys of
    :data:`RETIRED_FIELDS` are dropped)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {type(data).__name__}")
    retired = RETIRED_FIELDS.get(cls.__name__, frozenset())
    data = {k: v for k, v in data.items() if k not in retired}
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


# -- help --------------------------------------------------------------------------------------------
_ROLE = re.compile(r":[a-z]+:`(~?)([^`]+)`")  # :func:`ctvlp.x.f` -> `ctvlp.x.f`; :class:`~a.B` -> `B`


def plain_text(doc: str) -> str:
    """A docstring as one line of plain text: whitespace collapsed, reST roles and ``literals`` as `x`."""
    text = _ROLE.sub(lambda m: f"`{m[2].rsplit('.', 1)[-1] if m[1] else m[2]}`", doc)
    return " ".join(text.replace("``", "`").split())


@functools.cache
def field_help(cls: type) -> dict[str, str]:
    """Field name -> help of dataclass ``cls`` (and its dataclass bases): the docstring written under the
    field in the class body, as :func:`plain_text`; fields without one are absent."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body
        for stmt, after in zip(body, body[1:]):
            if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
                    and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)):
                docs[stmt.target.id] = plain_text(after.value.value)
    return docs


def _class_help(value) -> str:
    """The first paragraph of a dataclass value's class docstring (the help of a field that has none)."""
    if not dataclasses.is_dataclass(value):
        return ""
    return plain_text(inspect.cleandoc(type(value).__doc__ or "").split("\n\n")[0])


def to_yaml_with_help(cfg) -> str:
    """``cfg`` as block YAML with every field's help as a comment on its line (``lr: 0.001  # peak ...``);
    ``yaml.safe_load`` of it gives ``to_dict(cfg)``."""
    return "\n".join(_fields_yaml(cfg, 0)) + "\n"


def _fields_yaml(obj, indent: int) -> list[str]:
    docs = field_help(type(obj))
    lines = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        lines += _entry_yaml(f.name, value, docs.get(f.name) or _class_help(value), indent)
    return lines


def _entry_yaml(key, value, help_text: str, indent: int) -> list[str]:
    """The lines of ``key: value`` at ``indent``: a dataclass, a dict of dataclasses and a list of
    dataclasses as blocks (their fields with help), anything else as one flow-style value."""
    head = " " * indent + _flow(key) + ":"
    comment = f"  # {help_text}" if help_text else ""
    if dataclasses.is_dataclass(value):
        return [head + comment, *_fields_yaml(value, indent + 2)]
    if isinstance(value, dict) and value and all(dataclasses.is_dataclass(v) for v in value.values()):
        return [head + comment, *(line for k, v in value.items()
                                  for line in _entry_yaml(k, v, _class_help(v), indent + 2))]
    if isinstance(value, (list, tuple)) and value and all(dataclasses.is_dataclass(v) for v in value):
        lines = [head + comment]
        for item in value:  # "- " then the item's fields, aligned after it
            item_lines = _fields_yaml(item, indent + 4)
            lines += [" " * (indent + 2) + "- " + item_lines[0].lstrip(), *item_lines[1:]]
        return lines
    return [f"{head} {_flow(_plain(value))}{comment}"]


def _flow(value) -> str:
    """One value as YAML on one line (flow style)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=float("inf"), sort_keys=False)
    return text.removesuffix("\n...\n").rstrip("\n")
