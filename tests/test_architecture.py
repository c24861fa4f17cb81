"""The import graph of forgelab/ and plugins/: no circles, and the core never reaches up.

Every import is read with ``ast``, those inside functions included (an import hidden in a
function is still an arrow). ``plugins/`` ships as ``forgelab.plugins``.
"""
from __future__ import annotations

import ast
import functools
import graphlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"forgelab": ROOT / "forgelab", "forgelab.plugins": ROOT / "plugins"}
# The core and the protocol cores: one message's path, and the store and events it ends in.
# Data flows from them to the drivers that feed them and to the consumers that show it.
CORE = ("forgelab.protocols", "forgelab.core", "forgelab.store")
CONSUMERS = ("forgelab.drivers", "forgelab.app", "forgelab.web", "forgelab.attacks", "forgelab.cli")


def _modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([package, *parts])] = path
    return found


MODULES = _modules()


def _target(name: str) -> str | None:
    """The module of ours that ``name`` is, or the nearest package of ours that holds it."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str) -> set[str]:
    """The modules of ours that ``module`` imports, anywhere in its code."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # ``from pkg import mod`` imports the module pkg.mod when there is one
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        else:
            continue
        found |= {target for target in map(_target, names) if target and target != module}
    return found


@functools.cache
def import_graph() -> dict[str, set[str]]:
    return {module: imports_of(module) for module in MODULES}


def test_the_graph_sees_imports_inside_functions_and_relative_ones():
    graph = import_graph()
    assert "forgelab.core.registry" in graph["forgelab.cli.main"]  # imported inside a command function
    assert "forgelab.plugins._facts" in graph["forgelab.plugins.mismatch"]  # from ._facts import ...
    assert "forgelab.drivers.threaded" in graph["forgelab.drivers.smtp"]  # from .threaded import ...


def test_no_import_circle_in_forgelab_or_plugins():
    try:
        graphlib.TopologicalSorter(import_graph()).prepare()
    except graphlib.CycleError as exc:
        pytest.fail("import circle: " + " -> ".join(exc.args[1]))


def reached_from(start: str, graph: dict[str, set[str]]) -> dict[str, str]:
    """Every module ``start`` imports, directly or not, each with the module that imports it."""
    seen, todo = {}, [start]
    while todo:
        module = todo.pop()
        for target in graph[module]:
            if target not in seen and target != start:
                seen[target] = module
                todo.append(target)
    return seen


@pytest.mark.parametrize("core", CORE)
def test_the_core_never_imports_a_driver_the_web_view_the_attack_runner_or_the_cli(core):
    graph = import_graph()
    for module in [m for m in MODULES if m == core or m.startswith(core + ".")]:
        reached = reached_from(module, graph)
        bad = [m for m in reached if m.startswith(CONSUMERS)]
        assert not bad, f"{module} reaches {bad[0]} (through {reached[bad[0]]})"


def test_every_package_is_in_pyproject():
    """pyproject.toml lists its packages one by one (plugins/ and policies/ ship under forgelab):
    a package left out there works from a checkout and is missing from a wheel."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "forgelab").rglob("__init__.py")}
    assert found - listed == set(), "add to [tool.setuptools] packages"
