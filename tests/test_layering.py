"""The package's import graph, read with ``ast`` (nothing is imported): no cycles, ``clip_impl`` below
``nodes`` and ``cli``, and no ``_private`` name imported from another module (DESIGN 2, STYLE)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("clip_impl", "cli", "nodes")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            out[_module_name(path)] = path
    return out


def _resolve(module: str, is_package: bool, level: int, target: str | None) -> str:
    """The absolute (package-relative) name of ``from <level dots><target> import ...`` in ``module``."""
    base = module.split(".") if is_package else module.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, *(target.split(".") if target else [])])


def import_graph() -> tuple[dict[str, set[str]], list[str]]:
    """(module -> modules of the package it imports, private names imported across modules)."""
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    private = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level > 0:
                target = _resolve(name, is_package, node.level, node.module)
                for alias in node.names:
                    sub = f"{target}.{alias.name}" if target else alias.name
                    if sub in modules:  # ``from . import host``: the module itself
                        graph[name].add(sub)
                        continue
                    if target in modules:
                        graph[name].add(target)
                    if alias.name.startswith("_") and target != name:
                        private.append(f"{name} imports {alias.name} from {target}")
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("clip_suite."):
                graph[name].add(node.module.removeprefix("clip_suite."))
    return graph, private


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (a list of modules, first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for dep in sorted(graph.get(m, ())):
            # A package's __init__ importing its own submodules is not a cycle of the submodule back to it
            # unless the submodule imports the package itself.
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        path.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_graph_sees_the_package():
    graph, _ = import_graph()
    assert "clip_impl.loading" in graph and "cli.score" in graph and "nodes.host" in graph
    assert "clip_impl.tower_build" in graph["clip_impl.loading"]  # relative imports are resolved
    assert "clip_impl.prompt" in graph["cli.tokens"]  # ``from ..clip_impl.prompt import`` too


def test_no_import_cycles():
    graph, _ = import_graph()
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_clip_impl_imports_neither_nodes_nor_cli():
    graph, _ = import_graph()
    bad = sorted(
        f"{m} -> {d}" for m, deps in graph.items() if m.startswith("clip_impl") for d in deps
        if d.split(".")[0] in ("nodes", "cli")
    )
    assert not bad, bad


def test_cli_and_nodes_are_apart():
    graph, _ = import_graph()
    bad = sorted(
        f"{m} -> {d}" for m, deps in graph.items() for d in deps
        if m.split(".")[0] != d.split(".")[0] and {m.split(".")[0], d.split(".")[0]} == {"nodes", "cli"}
    )
    assert not bad, bad


def test_no_private_names_across_modules():
    _, private = import_graph()
    assert not private, private


def test_clip_impl_has_no_command_line_code():
    """``clip_impl`` is a library: no argparse, no print, no logging configuration."""
    bad = []
    for name, path in _modules().items():
        if not name.startswith("clip_impl"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                if "argparse" in names:
                    bad.append(f"{name}: imports argparse")
            elif isinstance(node, ast.Call):
                fn = node.func
                if isinstance(fn, ast.Name) and fn.id == "print":
                    bad.append(f"{name}:{node.lineno}: print()")
                if isinstance(fn, ast.Attribute) and fn.attr == "basicConfig":
                    bad.append(f"{name}:{node.lineno}: logging.basicConfig()")
    assert not bad, bad


def test_every_package_is_installed():
    """pyproject's package list names every package folder, so a (non-editable) install ships all of them."""
    import pytest

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {"clip_suite"} | {
        "clip_suite." + ".".join(p.parent.relative_to(ROOT).parts)
        for package in PACKAGES for p in (ROOT / package).rglob("__init__.py")
    }
    assert found <= listed, f"add to pyproject.toml [tool.setuptools] packages: {sorted(found - listed)}"
