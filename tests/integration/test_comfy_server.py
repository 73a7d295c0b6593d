"""A real ComfyUI server (``main.py --cpu``) with our pack listed under ``custom_nodes:`` in an extra model
paths file: the pack imports, ``/object_info`` lists our nodes as specified, and a graph POSTed to
``/prompt`` runs (its result read back from ``/history``). Everything ComfyUI writes goes to a temp
``--base-directory``."""

import json
import time
import urllib.request

import pytest

from clip_suite.clip_impl.text.chunking import chunk_prompt, describe_chunks
from comfy_harness import LONG_PROMPT as PROMPT, comfyui_server, model_folders

CONTRACT = {
    "ClipSuiteLoader": ["model", "model_2", "architecture", "precision", "device"],
    "ClipSuiteTextEncode": ["clip", "text", "clip_skip", "chunking", "comma_backtrack", "weighting", "pooled", "empty_prompt"],
    "ClipSuiteTextEncodeSDXL": ["clip", "text_g", "text_l", "clip_skip", "clip_skip_applies_to", "chunking",
                                "comma_backtrack", "weighting", "pooled", "empty_prompt", "width", "height", "crop_w",
                                "crop_h", "target_width", "target_height"],
    "ClipSuitePromptTokens": ["text", "chunking", "comma_backtrack"],
    "ClipSuiteImageTextSimilarity": ["clip", "images", "text", "scale"],
    "ClipSuiteSelectBest": ["clip", "images", "text", "top_k", "min_score", "scale"],
}


def _get(url: str, timeout=30):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def server(comfy_path, tmp_path_factory, full_size_models):
    tmp = tmp_path_factory.mktemp("comfyui_server")
    with comfyui_server(comfy_path, tmp, model_folders(tmp / "models", full_size_models)) as (url, log_path):

        def log_text(tail=4000):
            text = log_path.read_text()
            return text[-tail:] if tail else text

        yield url, log_text


def test_pack_imports(server):
    _url, log_text = server
    lines = log_text(None).splitlines()
    ours = [line for line in lines if "comfyui-clip-suite" in line]
    # ComfyUI lists each custom node folder with its import time, and "(IMPORT FAILED)" when it failed.
    assert any("seconds:" in line for line in ours), "\n".join(lines[-60:])
    assert not any("IMPORT FAILED" in line or "Cannot import" in line for line in ours), "\n".join(ours)


def test_object_info_lists_our_nodes(server):
    url, _ = server
    info = _get(f"{url}/object_info")
    for node_id, inputs in CONTRACT.items():
        node = info[node_id]
        assert node["category"] == "CLIP Suite" and node["description"]
        assert node["input_order"]["required"] == inputs
        assert all(spec[1].get("tooltip") for spec in node["input"]["required"].values())
        assert node["python_module"] == "custom_nodes.comfyui-clip-suite"
    assert info["ClipSuiteTextEncode"]["input"]["required"]["clip"][0] == "CLIP_SUITE,CLIP"
    assert info["ClipSuiteTextEncode"]["output"] == ["CONDITIONING"]
    assert info["ClipSuiteLoader"]["display_name"] == "Load CLIP (CLIP Suite)"
    scoring = info["ClipSuiteImageTextSimilarity"]  # scores: a list output, shown on an output node
    assert scoring["output_name"] == ["scores", "mean", "best_index", "report"] and scoring["output_node"]
    assert scoring["output_is_list"] == [True, False, False, False]
    assert info["ClipSuiteSelectBest"]["output_is_list"] == [False, True]
    models = info["ClipSuiteLoader"]["input"]["required"]["model"][0]
    for choice in ("checkpoints/sd15_te.safetensors", "checkpoints/sdxl_te.safetensors",
                   "text_encoders/clip_l.safetensors", "text_encoders/clip_g.safetensors"):
        assert choice in models


def test_prompt_over_http(server):
    url, log_text = server
    graph = {
        "1": {"class_type": "ClipSuiteLoader", "inputs": {"model": "checkpoints/sd15_te.safetensors", "model_2": "none",
                                                           "architecture": "auto", "precision": "auto", "device": "auto"}},
        "2": {"class_type": "ClipSuiteTextEncode", "inputs": {
            "clip": ["1", 0], "text": PROMPT, "clip_skip": 1, "chunking": "a1111", "comma_backtrack": 20,
            "weighting": "a1111", "pooled": "first_chunk", "empty_prompt": "encode"}},
        "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}},
        "4": {"class_type": "ClipSuitePromptTokens", "inputs": {"text": PROMPT, "chunking": "a1111", "comma_backtrack": 20}},
    }
    body = json.dumps({"prompt": graph, "client_id": "clip-suite-tests"}).encode()
    request = urllib.request.Request(f"{url}/prompt", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as r:
        prompt_id = json.loads(r.read())["prompt_id"]
    deadline = time.time() + 300
    while not (history := _get(f"{url}/history/{prompt_id}")):
        assert time.time() < deadline, f"no result after 300 s:\n{log_text()}"
        time.sleep(1)
    entry = history[prompt_id]
    assert entry["status"]["status_str"] == "success", entry["status"]
    outputs = entry["outputs"]
    assert "SD1.x: 2 chunks" in outputs["2"]["text"][0] and "CLIP-L layer 11/12 (LayerNorm)" in outputs["2"]["text"][0]
    tokens = describe_chunks(chunk_prompt(PROMPT, syntax="a1111", chunking="a1111"))["tokens"]
    assert outputs["4"]["text"][0].startswith(f"{tokens} tokens, 2 chunks (a1111 chunking)")
    assert "tensor(" in outputs["3"]["text"][0]  # the CONDITIONING reached the output node
