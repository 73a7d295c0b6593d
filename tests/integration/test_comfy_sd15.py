"""SD1.5 inside a real ComfyUI: our nodes against ComfyUI's own on the full-size random CLIP-L, through
ComfyUI's executor; model management, LoRA clones and caching.

The native side reads the standalone ``clip_l.safetensors`` (CLIPLoader); ours reads the same weights in
an SD1.5 checkpoint (``sd15_te.safetensors``) and also takes the native CLIP as input.
"""

import pytest

from comfy_harness import LONG_PROMPT as PROMPT, assert_conditioning_close, clip_loader, sink, suite_encode, suite_loader









def graph():
    """Native: CLIPLoader -> CLIPSetLastLayer(-2) -> CLIPTextEncode; also with a LoRA clone.
    Ours: our loader -> clip_skip 1; the native CLIP (and its clones) straight into our encoder."""
    return {
        "1": clip_loader("clip_l.safetensors"),
        "2": {"class_type": "CLIPSetLastLayer", "inputs": {"clip": ["1", 0], "stop_at_clip_layer": -2}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["2", 0], "text": PROMPT}},
        "4": suite_loader("checkpoints/sd15_te.safetensors"),
        "5": suite_encode("4", PROMPT, 1),
        "6": suite_encode("1", PROMPT, 1),
        "7": suite_encode("2", PROMPT, 1),
        "8": {"class_type": "ClipSuiteTestClipLora", "inputs": {"clip": ["2", 0], "seed": 1, "strength": 0.8}},
        "9": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["8", 0], "text": PROMPT}},
        "10": suite_encode("8", PROMPT, 1),
        "11": suite_encode("1", PROMPT, 0),
        "12": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 0], "text": PROMPT}},
        "99": sink("3", "5", "6", "7", "9", "10", "11", "12"),
    }


@pytest.fixture(scope="module")
def run(comfy):
    comfy.release()
    result = comfy.run(graph())
    yield result
    comfy.release()


def test_parity_with_clip_set_last_layer(comfy, run):
    ref = comfy.output("3")
    assert ref[0][0].shape == (1, 154, 768)
    ratios = {
        "our loader, clip_skip 1": assert_conditioning_close(comfy.output("5"), ref, "ours on sd15_te"),
        "native CLIP into ours": assert_conditioning_close(comfy.output("6"), ref, "native CLIP into ours"),
        "CLIPSetLastLayer clone into ours": assert_conditioning_close(comfy.output("7"), ref, "clone into ours"),
        "native clip_skip 0 vs CLIPTextEncode": assert_conditioning_close(comfy.output("11"), comfy.output("12"), "skip 0"),
    }
    print("SD1.5 max|diff|/max|ref|:", {k: f"{v:.2e}" for k, v in ratios.items()}, f"run {run.seconds:.1f}s")


def test_lora_clone_reads_its_own_patches(comfy, run):
    """The LoRA clone shares cond_stage_model with the unpatched CLIP: each must see its own weights."""
    lora_ref = comfy.output("9")
    ratio = assert_conditioning_close(comfy.output("10"), lora_ref, "LoRA clone into ours")
    print(f"SD1.5 LoRA max|diff|/max|ref|: {ratio:.2e}")
    assert (lora_ref[0][0] - comfy.output("3")[0][0]).abs().max() > 1e-3  # the LoRA changes the result
    assert_conditioning_close(comfy.output("7"), comfy.output("3"), "unpatched clone after the LoRA one")


def test_status_reports_layers_and_override(comfy, run):
    status = comfy.ui("7")["text"][0]
    assert "SD1.x: 2 chunks" in status and "CLIP-L layer 11/12 (LayerNorm)" in status
    assert "CLIPSetLastLayer -2: ignored, clip_skip 1 decides the layer (same layer)" in status
    assert "CLIPSetLastLayer" not in comfy.ui("5")["text"][0]


def test_patchers_in_model_management(comfy, run):
    host = comfy.pack_module("nodes.host")
    clip = comfy.output("4")
    assert isinstance(clip, host.HostedClip)
    tower = clip.model.towers["l"]
    size = sum(p.numel() * p.element_size() for p in tower.parameters())
    comfy.mm.load_models_gpu([clip.patchers["l"]], force_full_load=True)
    loaded = [m for m in comfy.mm.current_loaded_models if m.model is clip.patchers["l"]]
    assert len(loaded) == 1 and loaded[0].model_memory() == size and size > 400e6  # fp32 copy of 123M params
    # The same file loaded by a second loader node shares the weights and the patcher.
    again = comfy.pack_module("nodes.loader").ClipSuiteLoader().load("checkpoints/sd15_te.safetensors", "none", "auto", "auto", "auto")
    assert again["result"][0].patchers["l"] is clip.patchers["l"]
    comfy.mm.unload_all_models()
    assert not [m for m in comfy.mm.current_loaded_models if m.model is clip.patchers["l"]]


def test_cache_reruns_only_what_changed(comfy, run):
    g = {"4": suite_loader("checkpoints/sd15_te.safetensors"), "5": suite_encode("4", PROMPT, 1), "99": sink("5")}
    first = comfy.run(g)
    assert "4" in first.executed or "4" in first.cached
    second = comfy.run(g)
    assert second.executed == [] and set(second.cached) == {"4", "5", "99"}
    g["5"]["inputs"]["clip_skip"] = 2
    third = comfy.run(g)
    assert set(third.executed) == {"5", "99"} and "4" in third.cached
    status = comfy.ui("5")["text"][0]
    assert "CLIP-L layer 10/12" in status
    print(f"SD1.5 cached run {second.seconds:.2f}s, clip_skip change {third.seconds:.2f}s")
