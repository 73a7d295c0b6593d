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
    assert "clip_impl.weights.loading" in graph and "cli.score" in graph and "nodes.host" in graph
    assert "clip_impl.weights.assembly" in graph["clip_impl.weights.loading"]  # relative imports are resolved
    assert "clip_impl.text" in graph["cli.tokens"]  # ``from ..clip_impl.text import`` too


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


# ------------------------------------------------------------------------------ the library's rooms
# Feature sub-packages of clip_impl, lowest first; a sub-package imports only the core and the ones before it
# (a1111 and images sit side by side: neither imports the other).
SUBPACKAGE_LEVELS = {"towers": 0, "weights": 1, "text": 2, "a1111": 3, "images": 3, "scoring": 4}
MAX_CORE_MODULES = 8
MAX_MODULE_LINES = 400


def _room(module: str) -> str | None:
    """The clip_impl sub-package a module belongs to, "" for the flat core, None outside clip_impl."""
    parts = module.split(".")
    if parts[0] != "clip_impl":
        return None
    if len(parts) >= 2 and (ROOT / "clip_impl" / parts[1]).is_dir():
        return parts[1]
    return ""


def test_every_subpackage_has_a_level():
    found = {p.parent.name for p in (ROOT / "clip_impl").glob("*/__init__.py")}
    assert found == set(SUBPACKAGE_LEVELS), f"give each sub-package a level here: {sorted(found ^ set(SUBPACKAGE_LEVELS))}"


def test_subpackages_import_only_downward():
    graph, _ = import_graph()
    bad = []
    for module, deps in graph.items():
        room = _room(module)
        if room is None or module == "clip_impl":  # the public face may name every room
            continue
        for dep in deps:
            dep_room = _room(dep)
            if dep_room is None or dep_room == room or dep_room == "":
                continue
            if room == "" or SUBPACKAGE_LEVELS[dep_room] >= SUBPACKAGE_LEVELS[room]:
                bad.append(f"{module} ({room or 'core'}) -> {dep} ({dep_room})")
    assert not bad, "imports that go up or sideways: " + "; ".join(sorted(bad))


def test_core_is_small():
    core = sorted(p.name for p in (ROOT / "clip_impl").glob("*.py"))
    assert len(core) <= MAX_CORE_MODULES, f"clip_impl/ has {len(core)} flat modules {core}: move features to a sub-package"


def test_nodes_and_cli_import_faces_only():
    """nodes/ and cli/ import ``clip_impl``, a core module or a sub-package's face, never a module inside a
    sub-package, so a room can rearrange its modules without touching its callers."""
    graph, _ = import_graph()
    bad = sorted(
        f"{m} -> {d}" for m, deps in graph.items() if m.split(".")[0] in ("nodes", "cli") for d in deps
        if _room(d) and d.count(".") >= 2
    )
    assert not bad, bad


def test_public_face_binds_every_name():
    import clip_suite.clip_impl as face

    assert len(face.__all__) >= 8
    missing = [name for name in face.__all__ if not hasattr(face, name)]
    assert not missing, missing
    for room in SUBPACKAGE_LEVELS:
        package = __import__(f"clip_suite.clip_impl.{room}", fromlist=["__all__"])
        assert package.__all__, f"clip_impl/{room}/__init__.py declares no __all__"
        missing = [name for name in package.__all__ if not hasattr(package, name)]
        assert not missing, f"clip_impl.{room}.__all__ names unbound {missing}"


def test_modules_stay_small():
    long = []
    for name, path in _modules().items():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_MODULE_LINES:
            long.append(f"{path.relative_to(ROOT)}: {lines} lines")
    assert not long, long


def test_ships_py_typed():
    assert (ROOT / "py.typed").is_file() and (ROOT / "clip_impl" / "py.typed").is_file()
