"""What the web extension relies on from the Python side.

- ``tests/js/clip_skip_table.json``: the tables the encode nodes send the page (``clip_skip.layer_table``, for
  every family at real and tiny depths) and the expected clip_skip -> layers for every clip_skip value and
  ``clip_skip_applies_to``, generated here from ``clip_impl.clip_skip``; the JS tests check that
  ``web/clip_suite_helpers.js``, reading those tables, shows what Python resolves (the page keeps no copy of
  the rules). Regenerate after changing clip_skip.py with ``python tests/nodes/test_web_extension.py --write``
  (PYTHONPATH pointing at the package).
- The encode nodes' ``ui["clip_suite"]`` entry, and ``host.register_routes`` (once, only inside ComfyUI).
"""

import asyncio
import json
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from clip_suite.clip_impl import clip_skip as cs
from clip_suite.nodes import host
from clip_suite.nodes.hosting import tokens_route as tokens_api

ROOT = Path(__file__).resolve().parents[2]
TABLE = ROOT / "tests" / "js" / "clip_skip_table.json"
DEPTHS = {  # real models, and tiny test towers of uneven depth
    "sd1": [{"l": 12}, {"l": 4}],
    "sd2": [{"h": 24}, {"h": 4}],
    "sdxl": [{"l": 12, "g": 32}, {"l": 4, "g": 6}],
    "sdxl_refiner": [{"g": 32}, {"g": 6}],
    "clip": [{"l": 12}, {"l": 2}],
}


def clip_skip_table() -> dict:
    """Every case the JS mirror must agree on (one JSON object per case)."""
    cases = []
    for name, depths in DEPTHS.items():
        family = cs.FAMILIES[name]
        for tower_layers in depths:
            for applies_to in cs.APPLIES_TO:
                low, high = cs.clip_skip_range(family, tower_layers, applies_to)
                for k in range(-2, high + 3):  # past the ends every value is refused the same way
                    case = {"family": name, "tower_layers": tower_layers, "clip_skip": k, "applies_to": applies_to,
                            "range": [low, high]}
                    try:
                        choices = cs.resolve_layers(family, tower_layers, k, applies_to)
                    except ValueError:
                        case["error"] = True
                    else:
                        case["layers"] = {t: [c.layer, c.layer_norm, c.num_layers] for t, c in choices.items()}
                        case["describe"] = {t: c.describe(t) for t, c in choices.items()}
                        case["warnings"] = cs.layer_warnings(choices)
                    cases.append(case)
    tables = [
        {"family": name, "tower_layers": tower_layers, "table": cs.layer_table(cs.FAMILIES[name], tower_layers)}
        for name, depths in DEPTHS.items() for tower_layers in depths
    ]
    return {"applies_to": list(cs.APPLIES_TO), "tables": tables, "cases": cases}


def dump(table: dict) -> str:
    """One case per line, so a change to the rule reads as a short diff."""
    head = {k: v for k, v in table.items() if k != "cases"}
    body = ",\n".join("    " + json.dumps(c, sort_keys=True) for c in table["cases"])
    text = json.dumps(head, indent=2, sort_keys=True)
    return text[:-2] + ',\n  "cases": [\n' + body + "\n  ]\n}\n"


def test_table_is_current():
    table = clip_skip_table()
    assert json.loads(dump(table)) == table  # the writer keeps every value
    assert TABLE.is_file(), f"{TABLE} is missing: run python {Path(__file__).relative_to(ROOT)} --write"
    assert json.loads(TABLE.read_text()) == table, (
        f"{TABLE.name} is stale (clip_skip.py changed?): run python {Path(__file__).relative_to(ROOT)} --write, "
        "then make web/clip_suite_helpers.js pass node --test tests/js/"
    )


def test_table_covers_each_rule():
    cases = clip_skip_table()["cases"]
    assert {c["family"] for c in cases} == set(cs.FAMILIES)
    assert any(c.get("warnings") for c in cases)  # SDXL -1: the raw final layer
    assert any(c.get("error") for c in cases) and any(c["clip_skip"] == -1 and "layers" in c for c in cases)
    # applies_to changes the answer on SDXL only
    sdxl = {(c["clip_skip"], c["applies_to"]): c.get("layers") for c in cases
            if c["family"] == "sdxl" and c["tower_layers"] == {"l": 12, "g": 32}}
    assert sdxl[(2, "clip_l")] == {"l": [9, False, 12], "g": [31, False, 32]}
    assert sdxl[(2, "clip_g")] == {"l": [11, False, 12], "g": [29, False, 32]}


def test_layer_table_is_what_python_resolves():
    """Every entry the page reads equals resolve_layers / layer_warnings / translation_hint for that case."""
    table = clip_skip_table()
    for case in table["cases"]:
        entry = next(t["table"] for t in table["tables"]
                     if t["family"] == case["family"] and t["tower_layers"] == case["tower_layers"])
        rule = entry["applies_to"][case["applies_to"]]
        assert rule["range"] == case["range"], case
        choice = rule["choices"].get(str(case["clip_skip"]))
        if case.get("error"):
            assert choice is None, case
            continue
        assert {t: [c["layer"], c["layer_norm"], c["num_layers"]] for t, c in choice["layers"].items()} == case["layers"]
        assert {t: c["describe"] for t, c in choice["layers"].items()} == case["describe"]
        assert choice["warnings"] == case["warnings"], case
    for t in table["tables"]:
        family = cs.FAMILIES[t["family"]]
        assert t["table"]["hint"] == cs.translation_hint(family) and t["table"]["label"] == family.label
        assert t["table"]["towers"] == {k: cs.TOWER_LABELS[k] for k in family.towers}
        assert t["table"]["order"] == list(family.towers)


@pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js")
def test_js_reads_the_server_table(tmp_path):
    """The JS module, given the tables the nodes send, shows what Python resolves for every case (a table
    generated now, not only the committed one)."""
    fresh = tmp_path / "table.json"
    fresh.write_text(dump(clip_skip_table()))
    script = (
        "import { readFileSync } from 'node:fs';\n"
        f"import * as h from {json.dumps((ROOT / 'web' / 'clip_suite_helpers.js').as_uri())};\n"
        f"const t = JSON.parse(readFileSync({json.dumps(str(fresh))}, 'utf8'));\n"
        "const canon = (o) => JSON.stringify(o, Object.keys(o ?? {}).sort());\n"
        "let bad = 0;\n"
        "for (const c of t.cases) {\n"
        "  const info = {table: t.tables.find((x) => x.family === c.family &&\n"
        "    canon(x.tower_layers) === canon(c.tower_layers)).table};\n"
        "  const r = h.resolveClipSkip(info, c.clip_skip, c.applies_to);\n"
        "  const got = r.error ? null : Object.fromEntries(\n"
        "    Object.entries(r.layers).map(([k, v]) => [k, [v.layer, v.layerNorm, v.numLayers]]));\n"
        "  if (canon(got) !== canon(c.layers ?? null) || canon(r.range) !== canon(c.range)) bad++;\n"
        "}\n"
        "console.log(JSON.stringify({cases: t.cases.length, bad}));\n"
    )
    (tmp_path / "check.mjs").write_text(script)
    r = subprocess.run(["node", str(tmp_path / "check.mjs")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["cases"] > 200 and result["bad"] == 0, result


# ---------------------------------------------------------------------------------- node ui entry
def test_encode_nodes_report_family_and_layers(standalone):
    from clip_suite.nodes import NODE_CLASS_MAPPINGS as NODES

    clip = NODES["ClipSuiteLoader"]().load("checkpoints/sdxl.safetensors", "none", "auto", "auto", "cpu")["result"][0]
    out = NODES["ClipSuiteTextEncodeSDXL"]().encode(
        clip, "a cat", "", 1, "clip_l", "comfy", 20, "comfy", "first_chunk", "encode", 1024, 1024, 0, 0, 1024, 1024
    )
    info = dict(out["ui"]["clip_suite"][0])
    table = info.pop("table")
    assert table == cs.layer_table(cs.FAMILIES["sdxl"], {"l": 4, "g": 5})  # what the page reads for other values
    assert info == {"family": "sdxl", "clip_skip": 1, "applies_to": "clip_l",
                    "layers": {"l": {"layer": 2, "layer_norm": False, "num_layers": 4},
                               "g": {"layer": 4, "layer_norm": False, "num_layers": 5}}}
    json.dumps(out["ui"])  # what ComfyUI sends to the page must be JSON
    assert "CLIP-L layer 2/4" in out["ui"]["text"][0]  # the status text says the same

    clip = NODES["ClipSuiteLoader"]().load("checkpoints/sd15.safetensors", "none", "auto", "auto", "cpu")["result"][0]
    out = NODES["ClipSuiteTextEncode"]().encode(clip, "a cat", 2, "comfy", 20, "comfy", "first_chunk", "encode")
    entry = dict(out["ui"]["clip_suite"][0])
    assert entry.pop("table") == cs.layer_table(cs.FAMILIES["sd1"], {"l": 4})
    assert [entry] == [{"family": "sd1", "clip_skip": 2, "applies_to": "both",
                        "layers": {"l": {"layer": 2, "layer_norm": True, "num_layers": 4}}}]


# ---------------------------------------------------------------------------------- route registration
class _Routes(list):
    """aiohttp's RouteTableDef, as far as register_routes uses it."""

    def post(self, path):
        def add(handler):
            self.append(types.SimpleNamespace(method="POST", path=path, handler=handler))
            return handler

        return add


@pytest.fixture()
def fake_comfy(monkeypatch, tmp_path):
    """A loaded ComfyUI as host.py sees it: ``server.PromptServer.instance.routes`` and ``folder_paths``."""
    routes = _Routes()
    server = types.ModuleType("server")
    server.PromptServer = type("PromptServer", (), {"instance": types.SimpleNamespace(routes=routes)})
    folder_paths = types.ModuleType("folder_paths")
    folder_paths.get_folder_paths = lambda name: [str(tmp_path / name)]
    monkeypatch.setitem(sys.modules, "server", server)
    monkeypatch.setitem(sys.modules, "folder_paths", folder_paths)
    monkeypatch.setattr(host, "in_comfyui", lambda: True)
    return routes


def test_register_routes_outside_comfyui_does_nothing(monkeypatch):
    monkeypatch.setattr(host, "in_comfyui", lambda: False)
    assert host.register_routes() is False


def test_register_routes_without_prompt_server(fake_comfy, monkeypatch):
    monkeypatch.setattr(sys.modules["server"].PromptServer, "instance", None)
    assert host.register_routes() is False and not fake_comfy


def test_register_routes_once_with_comfy_embeddings(fake_comfy, tmp_path):
    from safetensors.torch import save_file

    assert host.register_routes() is True
    assert host.register_routes() is False  # imported twice: still one route
    assert [(r.method, r.path) for r in fake_comfy] == [("POST", tokens_api.ROUTE)]
    (tmp_path / "embeddings").mkdir()
    save_file({"emb_params": torch.zeros(5, 768)}, str(tmp_path / "embeddings" / "style.safetensors"))

    class Request:  # what the handler reads from aiohttp's request
        content_length = None

        def __init__(self, body: bytes):
            self.content = types.SimpleNamespace(read=self._read)
            self._body = body

        async def _read(self, n):
            part, self._body = self._body[:n], self._body[n:]
            return part

    async def ask(text):
        response = await fake_comfy[0].handler(Request(json.dumps({"text": text}).encode()))
        return json.loads(response.body)

    with_emb, plain = asyncio.run(ask("embedding:style a cat")), asyncio.run(ask("a cat"))
    assert with_emb["tokens"] == plain["tokens"] + 5  # the embedding counts as its 5 vectors


@pytest.mark.parametrize("chunking,weighting", [("comfy", "comfy"), ("comfy", "a1111"), ("comfy", "none"),
                                                ("a1111", "comfy"), ("a1111", "a1111"), ("a1111", "none")])
def test_route_embeddings_with_any_weighting(tmp_path, chunking, weighting):
    """References follow the weighting syntax's rule (a1111: the file name as a word; comfy and none:
    embedding:name), with either chunking (issue 8)."""
    from safetensors.torch import save_file

    from clip_suite.clip_impl.text.embeddings import EmbeddingLibrary

    save_file({"emb_params": torch.zeros(5, 768)}, str(tmp_path / "style.safetensors"))
    library = EmbeddingLibrary([tmp_path])

    def count(text):
        body = json.dumps({"text": text, "chunking": chunking, "weighting": weighting}).encode()
        return tokens_api.tokens_report(tokens_api.parse_request(body), library)["tokens"]

    reference = "style" if weighting.startswith("a1111") else "embedding:style"
    assert count(f"a {reference} cat") == count("a cat") + 5


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit(f"usage: python {Path(__file__).relative_to(ROOT)} --write  (rewrites {TABLE.relative_to(ROOT)})")
    TABLE.parent.mkdir(parents=True, exist_ok=True)
    TABLE.write_text(dump(clip_skip_table()))
    print(f"wrote {TABLE} ({len(clip_skip_table()['cases'])} cases)")
