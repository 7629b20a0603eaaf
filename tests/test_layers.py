"""The layer order of ``src/ctvlp`` (issue 18; docs/architecture.md, "Layers"), checked with an AST walk.

Each layer imports only layers below it; layers of one rank are siblings and do not import each other:

    base (errors, fsutil, config, progress, ctvlp.__version__)
      -> io -> data -> models | losses -> train | eval | inference -> recipes -> cli
      -> api (ctvlp/__init__.py's lazy public API: load_volume, load_model, Volume; ctvlp/__main__.py)

Every ``import ctvlp...`` / ``from ctvlp... import`` / relative import counts, at module level and inside
functions alike (a function-local import is a dependency all the same). No exception is listed: an upward
or sibling import fails, and so does a function-local import of a ctvlp module outside cli/ unless a comment
says it defers a heavy optional dependency on purpose.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "ctvlp"

LAYERS = ("base", "io", "data", ("models", "losses"), ("train", "eval", "inference"), "recipes", "cli", "api")
"""Bottom to top; a tuple is one rank of sibling layers."""
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in ((names,) if isinstance(names, str) else names)}
BASE_MODULES = {"errors", "fsutil", "config", "progress"}
"""Top-level modules usable by every layer (they import only each other)."""
BASE_ROOT_NAMES = {"__version__"}
"""Names of ``ctvlp/__init__.py`` that are base facts; every other name there is the public API (top)."""
DEFERRED = "deferred on purpose"
"""The marker (in a comment on the import's line or the line above) of a function-local import that defers a
heavy optional dependency on purpose."""

@dataclass(frozen=True)
class Import:
    """One import of a ctvlp module: where (file:line), who imports whom, and whether inside a function."""

    path: str
    line: int
    importer: str
    imported: str
    local: bool
    deferred: bool


def module_name(path: Path, root: Path = SRC) -> str:
    """``src/ctvlp/eval/run.py`` -> ``ctvlp.eval.run``; a package's ``__init__.py`` -> the package."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer(module: str) -> str:
    """The layer of a ctvlp module (or of ``ctvlp.NAME`` for a name imported from the root package)."""
    parts = module.split(".")
    if parts[0] != "ctvlp":
        raise ValueError(f"not a ctvlp module: {module}")
    if len(parts) == 1 or parts[1] == "__main__":
        return "api"
    if parts[1] in BASE_MODULES or parts[1] in BASE_ROOT_NAMES:
        return "base"
    if parts[1] in RANK:
        return parts[1]
    if len(parts) == 2:  # a name of ctvlp/__init__.py: the lazy public API
        return "api"
    raise ValueError(f"{module}: no layer assigned; add its package to LAYERS in tests/test_layers.py")


def allowed(importer: str, imported: str) -> bool:
    """Same layer, or a lower rank."""
    a, b = layer(importer), layer(imported)
    return a == b or RANK[b] < RANK[a]


def _resolve(module: str | None, level: int, importer: str, is_package: bool) -> str | None:
    """The absolute module of an ``import``/``from`` statement (relative imports resolved), or None."""
    if level == 0:
        return module
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _target(module: str, name: str, known: set[str]) -> str:
    """``from ctvlp.eval import run`` imports the module ``ctvlp.eval.run``; ``from ctvlp import __version__``
    the root's name ``ctvlp.__version__``; otherwise the ``from`` module itself."""
    if f"{module}.{name}" in known or module == "ctvlp":
        return f"{module}.{name}"
    return module


def imports_in(source: str, importer: str, path: str, known: set[str], is_package: bool = False) -> list[Import]:
    """Every import of a ctvlp module in one source text."""
    tree = ast.parse(source, filename=path)
    lines = source.splitlines()
    found: list[Import] = []

    def deferred(line: int) -> bool:
        return any(DEFERRED in lines[i - 1] for i in (line - 1, line) if 1 <= i <= len(lines))

    def visit(node: ast.AST, local: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = local or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            targets: list[str] = []
            if isinstance(child, ast.Import):
                targets = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                module = _resolve(child.module, child.level, importer, is_package)
                if module is not None and (module == "ctvlp" or module.startswith("ctvlp.")):
                    targets = sorted({_target(module, a.name, known) for a in child.names})
            for target in targets:
                if target == "ctvlp" or target.startswith("ctvlp."):
                    found.append(Import(path, child.lineno, importer, target, local, deferred(child.lineno)))
            visit(child, inside)

    visit(tree, False)
    return found


def all_imports() -> list[Import]:
    files = sorted(PACKAGE.rglob("*.py"))
    known = {module_name(p) for p in files}
    found: list[Import] = []
    for p in files:
        rel = str(p.relative_to(SRC.parent))
        found += imports_in(p.read_text(), module_name(p), rel, known, is_package=p.name == "__init__.py")
    return found


def upward(found: list[Import]) -> list[Import]:
    return [i for i in found if not allowed(i.importer, i.imported)]


def undeclared_local(found: list[Import]) -> list[Import]:
    """Function-local imports of ctvlp modules outside cli/ (and the api layer) without the DEFERRED marker."""
    return [i for i in found if i.local and not i.deferred and layer(i.importer) not in ("cli", "api")]


def _describe(items: list[Import]) -> str:
    return "\n".join(
        f"  {i.path}:{i.line}: {i.importer} ({layer(i.importer)}) -> {i.imported} ({layer(i.imported)})"
        for i in sorted(items, key=lambda i: (i.path, i.line))
    )


def _fail_on(violations: list[Import], what: str, fix: str) -> None:
    """Fail naming every violation (file:line, importer and imported with their layers) and the fix."""
    if violations:
        pytest.fail(f"{len(violations)} {what} ({fix}):\n{_describe(violations)}", pytrace=False)


@pytest.fixture(scope="module")
def found() -> list[Import]:
    return all_imports()


def test_every_module_has_a_layer(found):
    for i in found:
        layer(i.importer), layer(i.imported)  # raises, naming the module, where a package has no layer
    assert len({i.importer for i in found}) > 50  # the walk saw the package


def test_imports_go_down_the_layers(found):
    _fail_on(
        upward(found),
        "upward or sibling imports",
        "import only lower layers; move what siblings share down (docs/architecture.md, Layers)",
    )


def test_no_function_local_imports_of_ctvlp_modules(found):
    _fail_on(
        undeclared_local(found),
        "function-local imports of ctvlp modules",
        f"import at module level, or say why in a comment containing {DEFERRED!r}",
    )


CHECKER_SOURCE = '''
from ctvlp.data.reports import split_sentences
from ctvlp.eval import run
from . import loop
from ..errors import CtvlpError
from ctvlp import __version__, load_volume
import ctvlp.losses.clip


def f():
    from ctvlp.io.load import load_volume
    # deferred on purpose: nibabel
    from ctvlp.io.nifti import read_nifti
    return load_volume, read_nifti
'''


def test_the_checker_catches_upward_and_sibling_imports_only():
    known = {"ctvlp.eval.run", "ctvlp.models.loop", "ctvlp.errors"}
    found = imports_in(CHECKER_SOURCE, "ctvlp.models.mae", "synthetic.py", known)
    assert [(i.line, i.imported, i.local, i.deferred) for i in found] == [
        (2, "ctvlp.data.reports", False, False),
        (3, "ctvlp.eval.run", False, False),
        (4, "ctvlp.models.loop", False, False),
        (5, "ctvlp.errors", False, False),
        (6, "ctvlp.__version__", False, False),
        (6, "ctvlp.load_volume", False, False),
        (7, "ctvlp.losses.clip", False, False),
        (11, "ctvlp.io.load", True, False),
        (13, "ctvlp.io.nifti", True, True),
    ]
    assert [(i.line, i.imported) for i in upward(found)] == [
        (3, "ctvlp.eval.run"),  # models -> eval: up
        (6, "ctvlp.load_volume"),  # the public API is the top layer
        (7, "ctvlp.losses.clip"),  # models -> losses: siblings
    ]
    assert [(i.line, i.imported) for i in undeclared_local(found)] == [(11, "ctvlp.io.load")]
    with pytest.raises(pytest.fail.Exception, match=r"synthetic.py:3: ctvlp.models.mae \(models\) -> ctvlp.eval.run \(eval\)"):
        _fail_on(upward(found), "upward imports", "fix")
    _fail_on([], "upward imports", "fix")  # nothing to report: passes
    assert layer("ctvlp.__main__") == "api" and layer("ctvlp.fsutil") == "base"
    assert allowed("ctvlp.cli.train", "ctvlp.recipes.demo") and not allowed("ctvlp.train.loop", "ctvlp.inference")
