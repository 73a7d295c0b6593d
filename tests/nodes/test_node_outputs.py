"""Each node output is declared once (``common.Output``), and ComfyUI's four output tuples are derived from
the declarations; the import-time registration with ComfyUI is one call; the aesthetic folder has one name."""

from __future__ import annotations

import ast
import sys
import types
from pathlib import Path

import pytest

from clip_suite.nodes import NODE_CLASS_MAPPINGS, common, host

NODES_DIR = Path(__file__).resolve().parents[2] / "nodes"
OUTPUT_ATTRS = ("RETURN_TYPES", "RETURN_NAMES", "OUTPUT_TOOLTIPS", "OUTPUT_IS_LIST")


def test_declare_outputs_derives_the_four_tuples():
    declared = common.declare_outputs(
        common.Output("IMAGE", "images", "the images"),
        common.Output(["a", "b"], "mode", "a combo output"),
        common.scores_output("one per image"),
    )
    types_, names, tooltips, is_list = declared  # unpacks in a class body
    assert types_ == ("IMAGE", ["a", "b"], "FLOAT")
    assert names == ("images", "mode", "scores")
    assert tooltips == ("the images", "a combo output", "one per image")
    assert is_list == (False, False, True)
    assert declared.RETURN_NAMES is names
    assert common.declare_outputs() == ((), (), (), ())


@pytest.mark.parametrize("node_id", sorted(NODE_CLASS_MAPPINGS))
def test_four_output_tuples_line_up(node_id):
    cls = NODE_CLASS_MAPPINGS[node_id]
    values = [getattr(cls, a) for a in OUTPUT_ATTRS]
    assert all(type(v) is tuple for v in values)
    assert len({len(v) for v in values}) == 1 and values[0], "one entry per output in every tuple"
    types_, names, tooltips, is_list = values
    assert all(isinstance(t, (str, list)) for t in types_)
    assert all(isinstance(n, str) and n for n in names) and len(set(names)) == len(names)
    assert all(isinstance(t, str) and t.strip() for t in tooltips)
    assert all(type(b) is bool for b in is_list)


def _node_classes():
    for path in sorted(NODES_DIR.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and node.name in {c.__name__ for c in NODE_CLASS_MAPPINGS.values()}:
                yield path.name, node


def test_every_node_class_declares_its_outputs_with_the_helper():
    """No hand-written RETURN_TYPES/RETURN_NAMES/... tuples that line up only by position."""
    seen = set()
    for filename, cls in _node_classes():
        seen.add(cls.name)
        assigns = [s for s in cls.body if isinstance(s, (ast.Assign, ast.AnnAssign))]
        targets = []
        for s in assigns:
            for t in (s.targets if isinstance(s, ast.Assign) else [s.target]):
                names = [e.id for e in t.elts] if isinstance(t, ast.Tuple) else [getattr(t, "id", None)]
                if set(names) & set(OUTPUT_ATTRS):
                    targets.append((names, s.value))
        assert len(targets) == 1, f"{filename}: {cls.name} sets its output attributes in one statement"
        names, value = targets[0]
        assert names == list(OUTPUT_ATTRS), f"{filename}: {cls.name}"
        func = value.func if isinstance(value, ast.Call) else None
        called = getattr(func, "attr", None) or getattr(func, "id", None)
        assert called == "declare_outputs", f"{filename}: {cls.name} derives them with declare_outputs"
    assert seen == {c.__name__ for c in NODE_CLASS_MAPPINGS.values()}


def test_batch_scoring_nodes_share_their_outputs():
    similarity = NODE_CLASS_MAPPINGS["ClipSuiteImageTextSimilarity"]
    aesthetic = NODE_CLASS_MAPPINGS["ClipSuiteAestheticScore"]
    for cls in (similarity, aesthetic):
        assert cls.RETURN_NAMES == ("scores", "mean", "best_index", "report")
        assert cls.RETURN_TYPES == ("FLOAT", "FLOAT", "INT", "STRING")
        assert cls.OUTPUT_IS_LIST == (True, False, False, False)
    best = NODE_CLASS_MAPPINGS["ClipSuiteSelectBest"]
    assert best.RETURN_NAMES[1] == "scores" and best.OUTPUT_IS_LIST[1] is True and best.RETURN_TYPES[1] == "FLOAT"


# ---------------------------------------------------------------------------------- registration with ComfyUI
def test_nodes_package_registers_with_one_call():
    tree = ast.parse((NODES_DIR / "__init__.py").read_text(encoding="utf-8"))
    calls = [s.value for s in tree.body if isinstance(s, ast.Expr) and isinstance(s.value, ast.Call)]
    assert [ast.unparse(c) for c in calls] == ["host.register_with_comfyui()"]


def test_register_with_comfyui_outside_comfyui_does_nothing(monkeypatch):
    monkeypatch.setattr(host, "in_comfyui", lambda: False)
    assert host.register_with_comfyui() is None
    assert host.register_routes() is False and host.register_aesthetic_folder() is False


class _Routes(list):
    """aiohttp's RouteTableDef, as far as register_routes uses it."""

    def post(self, path):
        def add(handler):
            self.append(types.SimpleNamespace(method="POST", path=path, handler=handler))
            return handler

        return add


def test_register_with_comfyui_adds_the_route_and_the_aesthetic_folder_once(monkeypatch, tmp_path):
    routes = _Routes()
    server = types.ModuleType("server")
    server.PromptServer = type("PromptServer", (), {"instance": types.SimpleNamespace(routes=routes)})
    folder_paths = types.ModuleType("folder_paths")
    folder_paths.models_dir = str(tmp_path / "models")
    folder_paths.folder_names_and_paths = {}

    def add_model_folder_path(name, path):
        folder_paths.folder_names_and_paths.setdefault(name, ([], set()))[0].append(path)

    folder_paths.add_model_folder_path = add_model_folder_path
    monkeypatch.setitem(sys.modules, "server", server)
    monkeypatch.setitem(sys.modules, "folder_paths", folder_paths)
    monkeypatch.setattr(host, "in_comfyui", lambda: True)

    host.register_with_comfyui()
    host.register_with_comfyui()  # the pack imported twice
    assert [(r.method, r.path) for r in routes] == [("POST", "/clip_suite/tokens")]
    paths, suffixes = folder_paths.folder_names_and_paths[host.AESTHETIC_FOLDER]
    assert paths == [str(tmp_path / "models" / "aesthetic")]
    assert suffixes == set(host.AESTHETIC_SUFFIXES)


# ---------------------------------------------------------------------------------- the aesthetic folder
def test_aesthetic_folder_is_named_in_one_place():
    """Only host.py spells the folder out; the nodes' tooltips and messages use host.AESTHETIC_DIR."""
    assert host.AESTHETIC_DIR == f"models/{host.AESTHETIC_FOLDER}" == "models/aesthetic"
    for path in sorted(NODES_DIR.rglob("*.py")):
        if path.name == "host.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {
            id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef)) and ast.get_docstring(n) is not None
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                assert "models/aesthetic" not in node.value, path.name
                assert node.value != "aesthetic", path.name
