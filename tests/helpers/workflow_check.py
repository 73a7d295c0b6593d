"""Check ComfyUI UI-format workflows (what the frontend saves) against node definitions, and convert them to
the API format that ComfyUI's ``/prompt`` and ``validate_prompt`` take.

The frontend stores a node's widget values as ``widgets_values`` in the order of its widget inputs
(required, then optional; inputs of link types such as CLIP are sockets, not widgets) and adds one
``control_after_generate`` value after seed inputs. ``Note``/``MarkdownNote`` exist only in the frontend.
"""

from __future__ import annotations

import json
from pathlib import Path

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
CONTROL_VALUES = ("fixed", "increment", "decrement", "randomize")
FRONTEND_ONLY = {"Note", "MarkdownNote"}


def load(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def widget_inputs(input_types: dict) -> list[tuple[str, object, dict]]:
    """[(name, type, options)] of a node's widgets in frontend order; name None marks a seed control value."""
    out = []
    for section in ("required", "optional"):
        for name, spec in input_types.get(section, {}).items():
            kind, opts = spec[0], (spec[1] if len(spec) > 1 else {})
            if opts.get("forceInput") or not (isinstance(kind, list) or kind in WIDGET_TYPES):
                continue
            out.append((name, kind, opts))
            if kind == "INT" and (opts.get("control_after_generate") or name in ("seed", "noise_seed")):
                out.append((None, "CONTROL", {}))
    return out


def widget_problems(node: dict, input_types: dict, file_combos=()) -> list[str]:
    """What is wrong with a node's widgets_values for these input types (empty when valid).

    ``file_combos``: combo inputs that list the user's model files, whose values need not be present here.
    """
    where = f"node {node['id']} ({node['type']})"
    widgets = widget_inputs(input_types)
    values = node.get("widgets_values") or []
    if len(values) != len(widgets):
        return [f"{where}: {len(values)} widget values for {len(widgets)} widgets {[w[0] for w in widgets]}"]
    problems = []
    for (name, kind, opts), value in zip(widgets, values):
        if name is None:
            ok = value in CONTROL_VALUES
        elif isinstance(kind, list) or kind == "COMBO":
            options = kind if isinstance(kind, list) else opts.get("options", [])
            ok = isinstance(value, str) and (name in file_combos or value in options)
        elif kind == "INT":
            ok = isinstance(value, int) and opts.get("min", -2**63) <= value <= opts.get("max", 2**64)
        elif kind == "FLOAT":
            ok = isinstance(value, (int, float)) and opts.get("min", float("-inf")) <= value <= opts.get("max", float("inf"))
        elif kind == "BOOLEAN":
            ok = isinstance(value, bool)
        else:
            ok = isinstance(value, str)
        if not ok:
            problems.append(f"{where}: {name}={value!r} is not valid for {kind if not isinstance(kind, list) else 'its list'}")
    return problems


def link_problems(workflow: dict) -> list[str]:
    """Links that do not join an existing output slot to an existing input slot of the same link id."""
    nodes = {n["id"]: n for n in workflow["nodes"]}
    problems = []
    for link_id, src, src_slot, dst, dst_slot, _type in workflow["links"]:
        try:
            ok = link_id in nodes[src]["outputs"][src_slot]["links"] and nodes[dst]["inputs"][dst_slot]["link"] == link_id
        except (KeyError, IndexError):
            ok = False
        if not ok:
            problems.append(f"link {link_id}: {src}:{src_slot} -> {dst}:{dst_slot} does not match its nodes")
    return problems


def to_api(workflow: dict, input_types_of) -> dict:
    """The API-format prompt of a UI workflow (frontend-only nodes dropped). ``input_types_of(type)``."""
    links = {row[0]: row for row in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
        if node["type"] in FRONTEND_ONLY or node.get("mode", 0) != 0:
            continue
        inputs = {}
        names = [w[0] for w in widget_inputs(input_types_of(node["type"]))]
        for name, value in zip(names, node.get("widgets_values") or []):
            if name is not None:
                inputs[name] = value
        for inp in node.get("inputs", []):
            if inp.get("link") is not None:
                _id, src, src_slot, _dst, _slot, _type = links[inp["link"]]
                inputs[inp["name"]] = [str(src), src_slot]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt
