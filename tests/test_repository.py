"""A clone is self-sufficient: its real fixtures are intact, one version, no development machine's paths."""

from __future__ import annotations

import hashlib
import importlib.metadata
import re

import pytest

import ctvlp
from ctvlp.config import to_dict
from ctvlp.errors import BadDatasetError
from ctvlp.eval.real_masks import load_cases
from ctvlp.recipes import NAMES, get_recipe
from conftest import REAL


def test_real_fixtures_match_their_readme_checksums():
    listed = re.findall(r"^([0-9a-f]{64})  (\S+)$", (REAL / "README.md").read_text(), flags=re.M)
    files = sorted(str(p.relative_to(REAL)) for p in REAL.rglob("*") if p.is_file() and p.name != "README.md")
    assert sorted(name for _, name in listed) == files
    for digest, name in listed:
        assert hashlib.sha256((REAL / name).read_bytes()).hexdigest() == digest, name


def test_one_version():
    assert importlib.metadata.version("ctvlp") == ctvlp.__version__


def _strings(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, str):
        yield value


@pytest.mark.parametrize("name", sorted(NAMES))
def test_no_absolute_path_in_a_recipe_default(name):
    for debug in (False, True):
        paths = [s for s in _strings(to_dict(get_recipe(name, debug=debug))) if s.startswith(("/", "~"))]
        assert paths == [], f"{name}: a default names a machine's path"


def test_real_masks_without_a_folder_is_a_clear_error():
    with pytest.raises(BadDatasetError, match="--real-dir"):
        load_cases("", None)
