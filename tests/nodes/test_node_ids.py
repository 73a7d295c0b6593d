"""One list of node ids: the registry (nodes/__init__.py), the web extension's NODE_IDS and every id the web
files name, and the integration suite's list of our nodes all agree, so a new node is never half-registered."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from clip_suite.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "web"


def _web_node_ids() -> list[str]:
    source = (WEB / "clip_suite_helpers.js").read_text(encoding="utf-8")
    block = re.search(r"export const NODE_IDS = \[(.*?)\];", source, re.S)
    assert block, "web/clip_suite_helpers.js exports no NODE_IDS list"
    return re.findall(r'"(\w+)"', block.group(1))


def test_registry_names_every_node_once():
    assert set(NODE_CLASS_MAPPINGS) == set(NODE_DISPLAY_NAME_MAPPINGS)
    assert len(NODE_CLASS_MAPPINGS) >= 10


def test_web_extension_lists_exactly_the_registered_nodes():
    ids = _web_node_ids()
    assert len(ids) == len(set(ids)), f"NODE_IDS repeats an id: {ids}"
    assert set(ids) == set(NODE_CLASS_MAPPINGS), (
        f"web NODE_IDS vs NODE_CLASS_MAPPINGS: missing {sorted(set(NODE_CLASS_MAPPINGS) - set(ids))}, "
        f"unknown {sorted(set(ids) - set(NODE_CLASS_MAPPINGS))}"
    )


def test_web_files_name_only_registered_nodes():
    named = set()
    for path in WEB.rglob("*.js"):
        named |= set(re.findall(r"\bClipSuite\w+", path.read_text(encoding="utf-8")))
    assert named <= set(NODE_CLASS_MAPPINGS), f"web/ names unknown nodes {sorted(named - set(NODE_CLASS_MAPPINGS))}"


def test_integration_suite_covers_every_node():
    """tests/integration/test_comfy_pack.py's OUR_NODES (read without importing ComfyUI) is the registry."""
    tree = ast.parse((ROOT / "tests" / "integration" / "test_comfy_pack.py").read_text(encoding="utf-8"))
    listed = next(
        ast.literal_eval(node.value) for node in tree.body
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "OUR_NODES" for t in node.targets)
    )
    assert listed == NODE_DISPLAY_NAME_MAPPINGS
