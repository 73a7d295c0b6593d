"""The pack inside ComfyUI's own registry (in process), and the example workflows against ComfyUI's nodes."""

import asyncio
import os
from pathlib import Path

import pytest

from helpers import workflow_check as wc

EXAMPLES = Path(__file__).resolve().parents[2] / "example_workflows"
OUR_NODES = {
    "ClipSuiteLoader": "Load CLIP (CLIP Suite)",
    "ClipSuiteTextEncode": "CLIP Text Encode (CLIP skip, long prompts)",
    "ClipSuiteTextEncodeSDXL": "SDXL Text Encode (CLIP skip, long prompts)",
    "ClipSuitePromptTokens": "Prompt Tokens (CLIP Suite)",
    "ClipSuiteImageTextSimilarity": "Image-Text Similarity (CLIP score)",
    "ClipSuiteSelectBest": "Keep Best Images (CLIP score)",
    "ClipSuiteAestheticScore": "Aesthetic Score (CLIP)",
    "ClipSuiteZeroShot": "Classify Images (CLIP zero-shot)",
    "ClipSuiteLoraLoader": "Apply LoRA to CLIP (CLIP Suite)",
    "ClipSuiteA1111Parameters": "A1111 Parameters (CLIP Suite)",
}


def test_pack_loads(comfy):
    assert comfy.pack_loaded
    for node_id, display in OUR_NODES.items():
        assert node_id in comfy.nodes.NODE_CLASS_MAPPINGS
        assert comfy.nodes.NODE_DISPLAY_NAME_MAPPINGS[node_id] == display
    host = comfy.pack_module("nodes.host")
    assert host.in_comfyui() and host.get_host().name == "comfyui"


def test_loader_lists_comfyui_folders(comfy):
    choices = comfy.nodes.NODE_CLASS_MAPPINGS["ClipSuiteLoader"].INPUT_TYPES()["required"]["model"][0]
    for choice in ("checkpoints/sd15_te.safetensors", "checkpoints/sdxl_te.safetensors",
                   "text_encoders/clip_l.safetensors", "text_encoders/clip_g.safetensors"):
        assert choice in choices
    host = comfy.pack_module("nodes.host").get_host()
    assert os.path.samefile(host.resolve_model("text_encoders/clip_g.safetensors"), comfy.folder_paths.get_full_path("text_encoders", "clip_g.safetensors"))


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.json")), ids=lambda p: p.name)
def test_example_workflow_loads(comfy, path, tmp_path):
    """Every node exists in ComfyUI plus our pack, every widget value fits its input, and ComfyUI's own
    validate_prompt accepts the graph (checkpoint names linked to test files in a temp folder)."""
    registry = comfy.nodes.NODE_CLASS_MAPPINGS
    workflow = wc.load(path)
    missing = {n["type"] for n in workflow["nodes"]} - set(registry) - wc.FRONTEND_ONLY
    assert not missing, f"{path.name}: ComfyUI would report missing nodes {missing}"
    problems = wc.link_problems(workflow)
    for node in workflow["nodes"]:
        if node["type"] not in wc.FRONTEND_ONLY:
            combos = {"ckpt_name", "model", "model_2"}
            problems += wc.widget_problems(node, registry[node["type"]].INPUT_TYPES(), file_combos=combos)
    assert not problems, problems
    # The model files the workflow names, as links in temp model folders (validation only checks the lists).
    sd15 = comfy.folder_paths.get_full_path("checkpoints", "sd15_te.safetensors")
    names = []
    for node in workflow["nodes"]:
        if node["type"] == "CheckpointLoaderSimple":
            names.append(f"checkpoints/{node['widgets_values'][0]}")
        elif node["type"] == "ClipSuiteLoader":
            names += [v for v in node["widgets_values"][:2] if v != "none"]
    for name in names:
        folder, _, file = name.partition("/")
        (tmp_path / folder).mkdir(exist_ok=True)
        if not (tmp_path / folder / file).exists():
            os.symlink(sd15, tmp_path / folder / file)
        comfy.folder_paths.add_model_folder_path(folder, str(tmp_path / folder))
    prompt = wc.to_api(workflow, lambda t: registry[t].INPUT_TYPES())
    valid, error, outputs, node_errors = asyncio.run(comfy.execution.validate_prompt("wf", prompt, None))
    assert valid and not node_errors, (error, node_errors)
    output_nodes = [n for n in workflow["nodes"] if getattr(registry.get(n["type"]), "OUTPUT_NODE", False)]
    assert sorted(outputs) == sorted(str(n["id"]) for n in output_nodes)
    assert any(n["type"] == "SaveImage" for n in output_nodes)


def test_storage_follows_comfyui_dtypes(comfy, monkeypatch):
    """precision auto keeps ComfyUI's numbers: its text-encoder dtype, computed in fp32 (GPU paths included)."""
    import torch

    host = comfy.pack_module("nodes.host").get_host()
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert host.storage("auto", cpu) == ("auto", None)  # fp16 values kept as fp32 copies on the CPU
    assert host.storage("auto", gpu) == ("auto", torch.float16)
    assert host.storage("bf16", gpu) == ("bf16", None)
    monkeypatch.setattr(comfy.mm, "text_encoder_dtype", lambda device=None: torch.bfloat16)
    assert host.storage("auto", gpu) == ("fp32", torch.bfloat16)
    monkeypatch.setattr(comfy.mm, "text_encoder_dtype", lambda device=None: torch.float32)
    assert host.storage("auto", gpu) == ("fp32", None)
    assert host.devices("cpu") == (cpu, cpu) and host.devices("auto") == (cpu, cpu)  # ComfyUI runs with --cpu here
