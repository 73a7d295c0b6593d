"""SDXL inside a real ComfyUI: our encoders against CLIPTextEncodeSDXL and CLIPSetLastLayer(-3) ->
CLIPTextEncode on the full-size random CLIP-L + CLIP-G (1.6 GB fp16), through ComfyUI's executor.

Native: DualCLIPLoader on clip_l/clip_g.safetensors. Ours: that native CLIP fed straight into our nodes,
our loader on the SDXL checkpoint layout (sdxl_te.safetensors), and on the standalone pair. The three
sources run one after the other, releasing each (the machine is small), against references kept as tensors.
"""

import pytest

from comfy_harness import LONG_PROMPT as PROMPT, SIZES, assert_conditioning_close, sink, suite_encode_sdxl





def ours_graph(clip_node: dict) -> dict:
    return {"1": clip_node, "2": suite_encode_sdxl("1", PROMPT, 0), "3": suite_encode_sdxl("1", PROMPT, 1), "99": sink("2", "3")}


@pytest.fixture(scope="module")
def refs(comfy):
    """Native references, and our nodes fed with the native CLIP (run in the same graph)."""
    comfy.release()
    graph = {
        "1": {"class_type": "DualCLIPLoader", "inputs": {
            "clip_name1": "clip_l.safetensors", "clip_name2": "clip_g.safetensors", "type": "sdxl", "device": "default"}},
        "2": {"class_type": "CLIPTextEncodeSDXL", "inputs": {"clip": ["1", 0], "text_g": PROMPT, "text_l": PROMPT, **SIZES}},
        "3": {"class_type": "CLIPSetLastLayer", "inputs": {"clip": ["1", 0], "stop_at_clip_layer": -3}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["3", 0], "text": PROMPT}},
        "5": suite_encode_sdxl("1", PROMPT, 0),
        "6": suite_encode_sdxl("3", PROMPT, 1),
        "99": sink("2", "4", "5", "6"),
    }
    run = comfy.run(graph)
    out = {
        "skip0": comfy.output("2"), "skip1": comfy.output("4"),
        "native_into_ours": (comfy.output("5"), comfy.output("6")), "status": comfy.ui("6")["text"][0],
        "seconds": run.seconds,
    }
    comfy.release()
    yield out
    comfy.release()


def check(refs, skip0, skip1, what):
    r0 = assert_conditioning_close(skip0, refs["skip0"], f"{what}, clip_skip 0 vs CLIPTextEncodeSDXL")
    # CLIPTextEncode has no size keys: compare cond and pooled only.
    (c1, d1), = skip1
    r1 = assert_conditioning_close([[c1, {"pooled_output": d1["pooled_output"]}]], refs["skip1"],
                                   f"{what}, clip_skip 1 vs CLIPSetLastLayer(-3)")
    assert {k: d1[k] for k in SIZES} == SIZES
    return r0, r1


def test_native_clip_into_ours(refs):
    assert refs["skip0"][0][0].shape == (1, 154, 2048)
    r0, r1 = check(refs, *refs["native_into_ours"], "DualCLIPLoader CLIP into ours")
    assert "CLIPSetLastLayer -3: ignored, clip_skip 1 decides the layer (same layer)" in refs["status"]
    print(f"SDXL native CLIP into ours: max|diff|/max|ref| {r0:.2e} (skip 0), {r1:.2e} (skip 1); "
          f"native graph {refs['seconds']:.1f}s")


@pytest.mark.parametrize("source", ["checkpoint", "pair"])
def test_our_loader(comfy, refs, source):
    if source == "checkpoint":
        model, model_2 = "checkpoints/sdxl_te.safetensors", "none"
    else:
        model, model_2 = "text_encoders/clip_l.safetensors", "text_encoders/clip_g.safetensors"
    loader = {"class_type": "ClipSuiteLoader", "inputs": {
        "model": model, "model_2": model_2, "architecture": "auto", "precision": "auto", "device": "auto"}}
    run = comfy.run(ours_graph(loader))
    r0, r1 = check(refs, comfy.output("2"), comfy.output("3"), f"our loader on {source}")
    status = comfy.ui("3")["text"][0]
    assert "CLIP-L layer 10/12 (no LayerNorm), CLIP-G layer 30/32 (no LayerNorm)" in status
    clip = comfy.output("1")
    sizes = {t: p.model_size() for t, p in clip.patchers.items()}
    loaded = {id(m.model): m.model_memory() for m in comfy.mm.current_loaded_models}
    assert all(loaded.get(id(p)) == sizes[t] for t, p in clip.patchers.items()), (sizes, loaded)
    print(f"SDXL ours on {source}: max|diff|/max|ref| {r0:.2e} (skip 0), {r1:.2e} (skip 1); run {run.seconds:.1f}s; "
          f"patcher sizes {sizes}")
    comfy.mm.unload_all_models()
    assert not any(m.model is p for m in comfy.mm.current_loaded_models for p in clip.patchers.values())
    comfy.release()
