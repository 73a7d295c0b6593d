"""Layering: only nodes/host.py talks to ComfyUI, and the package imports without it."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HOST_MODULES = ("comfy", "folder_paths", "server", "comfy_extras", "comfy_execution", "comfy_api", "execution")


def _imports(tree: ast.AST):
    """(top-level module name, node, whether the import sits at module level) for every import."""
    top_level = set(map(id, getattr(tree, "body", [])))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.split(".")[0], node, id(node) in top_level
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0], node, id(node) in top_level


def _sources():
    files = sorted((ROOT / "clip_impl").rglob("*.py")) + sorted((ROOT / "nodes").rglob("*.py"))
    return files + sorted(ROOT.glob("*.py"))


def test_only_host_imports_comfyui():
    offenders = []
    for path in _sources():
        tree = ast.parse(path.read_text(), str(path))
        for module, node, _ in _imports(tree):
            if module in HOST_MODULES and path != ROOT / "nodes" / "host.py":
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {module}")
    assert not offenders, "only nodes/host.py may import ComfyUI:\n" + "\n".join(offenders)
    assert len(_sources()) > 15  # the scan saw the package


def test_host_imports_comfyui_lazily():
    tree = ast.parse((ROOT / "nodes" / "host.py").read_text())
    eager = [f"line {n.lineno}" for m, n, top in _imports(tree) if m in HOST_MODULES and top]
    assert not eager, f"nodes/host.py imports ComfyUI at module level ({eager}); import inside functions"
    lazy = {m for m, _n, top in _imports(tree) if not top}
    assert {"comfy", "folder_paths"} <= lazy  # the scan does see host.py's own imports


def test_package_imports_without_comfyui(tmp_path):
    code = (
        "import sys, clip_suite, clip_suite.nodes as n\n"
        "assert len(n.NODE_CLASS_MAPPINGS) >= 4\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in %r)\n"
        "assert not bad, bad\n"
        "print('ok')\n" % (HOST_MODULES,)
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr
