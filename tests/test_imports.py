"""The import graph of ``engine/`` and ``training/``: every module imports, and no module reaches
itself through imports, whether at module level or inside a function (a lazy import hides a
circle from Python but not from a reader)."""

import ast
import graphlib
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("engine", "training")


def _modules() -> dict[str, Path]:
    """Dotted name → file, for every module of the packages (scripts in folders without an
    ``__init__.py``, like ``training/recipes/``, included: they import the package too)."""
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imported(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of ``known`` that the file names in any import statement, relative ones
    resolved against its own package."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            targets = [module, *(f"{module}.{a.name}" for a in node.names)]
        else:
            continue
        found |= {t for t in targets if t in known and t != name}
    return found


def test_engine_and_training_have_no_import_circle():
    mods = _modules()
    graph = {name: _imported(name, path, set(mods)) for name, path in mods.items()}
    assert graph["training.stage_registry"].isdisjoint({"training.cli", "training.results"})
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as e:
        pytest.fail("import circle: " + " -> ".join(e.args[1]))


@pytest.mark.parametrize("name", sorted(n for n, p in _modules().items() if (p.parent / "__init__.py").exists()))
def test_every_module_imports(name):
    importlib.import_module(name)
