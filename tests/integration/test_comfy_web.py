"""The web extension in a real ComfyUI (``main.py --cpu``, our pack listed under ``custom_nodes:`` in an extra
model paths file, everything ComfyUI writes in a temp ``--base-directory``, as test_comfy_server.py starts it).

- The tokenizer route answers through ComfyUI's own server, at ``/clip_suite/tokens`` and under ``/api``
  (where the page's ``api.fetchApi`` sends it), exactly what ``python -m clip_suite tokens --json`` prints;
  an embedding in ComfyUI's ``embeddings`` folder counts as its vectors; bad bodies get 400/413 ``{"error"}``.
- The page, in headless Chromium (Debian's ``chromium`` driven by ``playwright-core`` through
  ``web_browser.cjs``; skipped when node, chromium or playwright-core is missing): it loads with no errors
  from our extension and no work done while none of our nodes is on the canvas; our SDXL node added from the
  search box counts a 100-token prompt typed into ``text_g`` as "2 chunks"; a saved workflow keeps every
  widget value; after a run (tiny SDXL checkpoint) the node shows the layers clip_skip selects.

playwright-core: ``npm install playwright-core`` in a folder outside the repository and point
``CLIP_SUITE_NODE_MODULES`` at its ``node_modules`` (or install it as a dev dependency at the repository
root). Chromium: ``apt-get install chromium`` (or set ``CHROMIUM``). Screenshots go to
``$CLIP_SUITE_SCREENSHOTS`` (default: a pytest temp folder); their paths are printed (pytest -s).
"""

import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch

from clip_suite.clip_impl.text.chunking import chunk_prompt, describe_chunks
from clip_suite.cli import main as cli_main
from comfy_harness import comfyui_server
from helpers.shared_helpers import BAD_REQUESTS

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SDXL_INPUTS = ["text_g", "text_l", "clip_skip", "clip_skip_applies_to", "chunking", "comma_backtrack", "weighting",
               "pooled", "empty_prompt", "width", "height", "crop_w", "crop_h", "target_width", "target_height",
               "steps", "scheduler"]  # the last two are optional inputs (A1111 schedules), still widgets
LONG = ", ".join(f"tag{i} (detail:1.{i % 9})" for i in range(120))  # ~500 tokens
ROUTE_CASES = [
    ("a photo of a cat", "comfy", 20, "comfy"),
    ("first BREAK second BREAK BREAK third", "a1111", 20, "a1111"),
    ("(masterpiece:1.2), best quality, ((detailed)), [blurry]", "comfy", 20, "comfy"),
    (" ".join(["a"] * 70) + " , " + " ".join(["b"] * 20), "a1111", 5, "a1111"),
    (LONG, "a1111", 20, "a1111"),
]


def hundred_token_prompt() -> str:
    """A plain prompt of exactly 100 tokens: one full 75-token chunk and 25 more."""
    words = ("a cozy cabin in a snowy pine forest at dusk, warm light in the windows, smoke from the chimney, "
             "a frozen lake, stars above, " * 6).split(" ")
    for n in range(len(words)):
        text = " ".join(words[:n])
        if describe_chunks(chunk_prompt(text))["tokens"] == 100:
            return text
    raise AssertionError("no prefix of the words has 100 tokens")


def post(url: str, body: bytes, method: str = "POST"):
    """(status, parsed JSON body or None)."""
    request = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        text = e.read()
        try:
            return e.code, json.loads(text)
        except ValueError:
            return e.code, None


@pytest.fixture(scope="module")
def server(comfy_path, tmp_path_factory, model_dir):
    """ComfyUI serving the page, with our pack, a tiny SDXL checkpoint and one 5-vector embedding."""
    from safetensors.torch import save_file

    tmp = tmp_path_factory.mktemp("comfyui_web")
    folders = {"checkpoints": tmp / "models" / "checkpoints", "embeddings": tmp / "models" / "embeddings"}
    for d in folders.values():
        d.mkdir(parents=True)
    os.symlink(model_dir / "sdxl.safetensors", folders["checkpoints"] / "sdxl.safetensors")
    save_file({"emb_params": torch.zeros(5, 768)}, str(folders["embeddings"] / "style.safetensors"))
    with comfyui_server(comfy_path, tmp, folders) as (url, log_path):
        yield url, log_path


# ------------------------------------------------------------------------------------------- the route
def test_pack_loads_with_its_web_directory(server):
    url, log_path = server
    ours = [line for line in log_path.read_text().splitlines() if "comfyui-clip-suite" in line]
    assert ours and not any("IMPORT FAILED" in line or "Cannot import" in line for line in ours), "\n".join(ours)
    with urllib.request.urlopen(f"{url}/extensions", timeout=30) as r:
        scripts = json.loads(r.read())
    assert {"/extensions/comfyui-clip-suite/clip_suite.js",
            "/extensions/comfyui-clip-suite/clip_suite_helpers.js"} <= set(scripts)


@pytest.mark.parametrize("text,chunking,backtrack,weighting", ROUTE_CASES)
def test_route_answers_like_the_cli(server, capsys, text, chunking, backtrack, weighting):
    url, _ = server
    argv = ["tokens", "--json", "--chunking", chunking, "--comma-backtrack", str(backtrack), "--weighting", weighting]
    assert cli_main(argv + [text]) == 0
    expected = json.loads(capsys.readouterr().out)
    body = json.dumps({"text": text, "chunking": chunking, "comma_backtrack": backtrack, "weighting": weighting})
    for path in ("/clip_suite/tokens", "/api/clip_suite/tokens"):
        assert post(url + path, body.encode()) == (200, expected), path


def test_route_counts_embeddings_from_comfyui_folders(server):
    url, _ = server
    status, plain = post(f"{url}/api/clip_suite/tokens", b'{"text": "a cat"}')
    status_emb, with_emb = post(f"{url}/api/clip_suite/tokens", b'{"text": "embedding:style a cat"}')
    assert status == status_emb == 200
    assert with_emb["tokens"] == plain["tokens"] + 5, (plain, with_emb)


@pytest.mark.parametrize("body,status", BAD_REQUESTS)
def test_route_refuses_bad_bodies(server, body, status):
    url, _ = server
    got, answer = post(f"{url}/api/clip_suite/tokens", body)
    assert got == status and isinstance(answer, dict) and answer.get("error"), (got, answer)


def test_a_hostile_prompt_does_not_stall_the_server(server):
    """A 75 KB prompt of nested brackets is tokenized off the event loop: the server answers meanwhile."""
    import threading
    import time

    url, _ = server
    hostile = json.dumps({"text": "(a:" * 25_000, "weighting": "a1111", "chunking": "a1111"}).encode()
    result = {}
    worker = threading.Thread(target=lambda: result.update(hostile=post(f"{url}/api/clip_suite/tokens", hostile)))
    worker.start()
    time.sleep(0.05)
    t0 = time.perf_counter()
    quick = post(f"{url}/api/clip_suite/tokens", json.dumps({"text": "a cat"}).encode())
    quick_s = time.perf_counter() - t0
    worker.join(60)
    assert quick[0] == 200 and quick[1]["tokens"] == 2
    assert result["hostile"][0] == 200 and result["hostile"][1]["chunks"] > 100
    assert quick_s < 5.0, quick_s


def test_route_takes_post_only(server):
    url, _ = server
    for path in ("/clip_suite/tokens", "/api/clip_suite/tokens"):
        assert post(url + path, None, method="GET")[0] in (404, 405), path


# ------------------------------------------------------------------------------------------- the page
def _browser_tools():
    """(node, chromium, NODE_PATH) or a pytest skip naming what is missing."""
    node = shutil.which("node")
    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    candidates = [os.environ.get("CLIP_SUITE_NODE_MODULES"), str(REPO / "node_modules")]
    modules = next((c for c in candidates if c and (Path(c) / "playwright-core" / "package.json").is_file()), None)
    if node is None:
        pytest.skip("browser test: needs Node.js")
    if not os.access(chromium, os.X_OK):
        pytest.skip("browser test: needs Chromium (apt-get install chromium, or set CHROMIUM)")
    if modules is None:
        pytest.skip("browser test: needs playwright-core (npm install playwright-core outside the repository, "
                    "then CLIP_SUITE_NODE_MODULES=<that folder>/node_modules)")
    return node, chromium, modules


@pytest.fixture(scope="module")
def page(server, tmp_path_factory):
    """What web_browser.cjs saw on the page (see its steps); runs the browser once for the tests below."""
    node, chromium, modules = _browser_tools()
    url, log_path = server
    tmp = tmp_path_factory.mktemp("browser")
    out_dir = Path(os.environ.get("CLIP_SUITE_SCREENSHOTS") or tmp / "screenshots")
    out_dir.mkdir(parents=True, exist_ok=True)
    prompt = hundred_token_prompt()
    sizes = {"width": 1024, "height": 1024, "crop_w": os.getpid() % 512, "crop_h": 0,  # a new graph: never cached
             "target_width": 1024, "target_height": 1024}
    run = {
        "1": {"class_type": "ClipSuiteLoader", "inputs": {
            "model": "checkpoints/sdxl.safetensors", "model_2": "none", "architecture": "auto", "precision": "auto",
            "device": "auto"}},
        "2": {"class_type": "ClipSuiteTextEncodeSDXL", "inputs": {
            "clip": ["1", 0], "text_g": prompt, "text_l": "", "clip_skip": 0, "clip_skip_applies_to": "both",
            "chunking": "comfy", "comma_backtrack": 20, "weighting": "comfy", "pooled": "first_chunk",
            "empty_prompt": "encode", **sizes}},
        "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}},
        "4": {"class_type": "ClipSuitePromptTokens", "inputs": {"text": "a cat BREAK a dog", "chunking": "a1111",
                                                                 "comma_backtrack": 20}},
    }
    config = {"url": url, "chromium": chromium, "userDataDir": str(tmp / "profile"), "outDir": str(out_dir),
              "prompt": prompt, "tokens": 100, "run": run}
    (tmp / "config.json").write_text(json.dumps(config))
    env = {**os.environ, "NODE_PATH": modules}
    r = subprocess.run([node, str(HERE / "web_browser.cjs"), str(tmp / "config.json")],
                       capture_output=True, text=True, env=env, timeout=420)
    log_tail = log_path.read_text()[-3000:]
    assert r.returncode == 0, f"browser script failed:\n{r.stderr[-4000:]}\nComfyUI log:\n{log_tail}"
    result = json.loads(r.stdout)
    for name, path in result["screenshots"].items():
        print(f"screenshot ({name}): {path}")
    return result


def test_page_without_our_nodes_is_untouched(page):
    assert page["scripts"] == {"/extensions/comfyui-clip-suite/clip_suite.js": 200,
                               "/extensions/comfyui-clip-suite/clip_suite_helpers.js": 200}
    empty = page["emptyPage"]
    assert "CLIPTextEncode" in empty["nodeTypes"] and not any(t.startswith("ClipSuite") for t in empty["nodeTypes"])
    assert empty["panels"] == 0 and not empty["style"]  # no work done: no panel, not even our stylesheet
    assert [r for r in page["tokenRequests"] if r["phase"] == "empty"] == []


def test_no_errors_from_our_extension(page):
    ours = [e for e in page["console"] + page["pageErrors"] if e["ours"]]
    assert not ours, json.dumps(ours, indent=1)


def test_sdxl_counter_counts_a_100_token_prompt(page):
    typed, opened = page["typed"], page["opened"]
    assert typed["lines"][0] == "▸ text_g: 100 tokens, 2 chunks", typed["lines"]
    assert typed["lines"][1] == "text_l: empty: CLIP-L uses text_g"
    assert typed["widgetNames"][-1] == "clip_suite_info"  # the panel comes after every real widget
    report = describe_chunks(chunk_prompt(hundred_token_prompt()))
    assert opened["lines"][:3] == [
        "▾ text_g: 100 tokens, 2 chunks",
        f"   chunk 1: 75/75 … {report['boundaries'][0]}",
        f"   chunk 2: 25/75 … {report['boundaries'][1]}",
    ]
    # Debounced: typing ~500 characters sent a handful of requests, not one per key.
    assert 1 <= len([r for r in page["tokenRequests"] if r["phase"] == "sdxl"]) <= 20


def test_saved_workflow_keeps_widget_values(page):
    rt = page["roundtrip"]
    assert rt["widgetNames"] == SDXL_INPUTS + ["clip_suite_info"]
    assert rt["widgetsValues"] == [rt["before"][name] for name in SDXL_INPUTS]  # by index, no hole, nothing extra
    assert rt["before"]["text_g"] == hundred_token_prompt()
    assert rt["after"] == rt["before"]  # loaded back: every value in its widget
    assert rt["afterWidgetNames"] == rt["widgetNames"]
    assert sorted(rt["apiInputs"]) == sorted(SDXL_INPUTS)  # the panel is not sent as an input


def test_run_shows_the_layers_clip_skip_selects(page):
    after = page["afterRun"]
    assert after["skipLabel"] == "clip_skip (L 3/4, G 4/5)"  # the tiny SDXL towers: 4 and 5 layers
    assert "last run: SDXL: 2 chunks (CLIP-L 2, CLIP-G 2)" in after["lines"]
    changed = page["skipChanged"]
    assert changed["skipLabel"] == "clip_skip (L 4/4 raw, G 5/5 raw)"
    i = changed["lines"].index("next run: clip_skip -1 on SDXL:")
    assert changed["lines"][i + 1 : i + 4] == [
        "  CLIP-L layer 4/4 (no LayerNorm)",
        "  CLIP-G layer 5/5 (no LayerNorm)",
        "warning: raw final layer on CLIP-L, CLIP-G: some SDXL checkpoints give white or blank images",
    ]


def test_prompt_tokens_node_counts_its_text(page):
    lines = page["promptTokens"]["lines"]
    assert lines[0] == "▸ text: 4 tokens, 2 chunks", lines
    assert page["promptTokens"]["skipLabel"] is None  # no clip_skip widget there
