"""SD2.x and the SDXL refiner inside a real ComfyUI, through its executor, on full-size random weights.

Native: ``CLIPLoader`` on the standalone OpenCLIP-H file (ComfyUI builds ``SD2ClipModel``) and on clip_g
alone (``SDXLRefinerClipModel``), with and without ``CLIPSetLastLayer``, into ``CLIPTextEncode``.
Ours: our loader on the same weights in SD2.x / refiner checkpoint layout (``cond_stage_model.model.``,
``conditioner.embedders.0.model.``), and the native CLIPs straight into our encoders. Both families'
native layer is the penultimate, so clip_skip k is ``CLIPSetLastLayer`` -(k+2).
"""

import pytest

from comfy_harness import LONG_PROMPT as PROMPT, assert_conditioning_close, clip_loader, sink, suite_encode, suite_loader









def last_layer(clip_node, n):
    return {"class_type": "CLIPSetLastLayer", "inputs": {"clip": [clip_node, 0], "stop_at_clip_layer": n}}


def text_encode(clip_node):
    return {"class_type": "CLIPTextEncode", "inputs": {"clip": [clip_node, 0], "text": PROMPT}}


def graph(text_encoder: str, checkpoint: str) -> dict:
    return {
        "1": clip_loader(text_encoder),
        "2": text_encode("1"),
        "3": last_layer("1", -3),
        "4": text_encode("3"),
        "5": last_layer("1", -1),
        "6": text_encode("5"),
        "7": suite_loader(checkpoint),
        "8": suite_encode("7", PROMPT, 0),
        "9": suite_encode("7", PROMPT, 1),
        "10": suite_encode("7", PROMPT, -1),
        "11": suite_encode("1", PROMPT, 0),
        "12": suite_encode("3", PROMPT, 1),  # the clone's CLIPSetLastLayer is overridden by clip_skip (status says so)
        "99": sink("2", "4", "6", "8", "9", "10", "11", "12"),
    }


@pytest.fixture(scope="module", params=[("sd2", "clip_h.safetensors", "checkpoints/sd2_te.safetensors", 1024),
                                        ("refiner", "clip_g.safetensors", "checkpoints/sdxl_refiner_te.safetensors", 1280)],
                ids=lambda p: p[0])
def run(comfy, request):
    family, text_encoder, checkpoint, width = request.param
    comfy.release()
    result = comfy.run(graph(text_encoder, checkpoint))
    yield family, width, result
    comfy.release()


def test_parity_with_native_encoders(comfy, run):
    family, width, result = run
    skip0, skip1, skip_final = comfy.output("2"), comfy.output("4"), comfy.output("6")
    assert skip0[0][0].shape == (1, 154, width)
    assert skip0[0][1]["pooled_output"].shape == (1, width)
    ratios = {
        "loader skip 0": assert_conditioning_close(comfy.output("8"), skip0, f"{family} ours skip 0"),
        "loader skip 1": assert_conditioning_close(comfy.output("9"), skip1, f"{family} ours skip 1"),
        "loader skip -1": assert_conditioning_close(comfy.output("10"), skip_final, f"{family} ours skip -1"),
        "native CLIP skip 0": assert_conditioning_close(comfy.output("11"), skip0, f"{family} native into ours"),
        "CLIPSetLastLayer clone skip 1": assert_conditioning_close(comfy.output("12"), skip1, f"{family} clone into ours"),
    }
    print(f"{family} max|diff|/max|ref|:", {k: f"{v:.2e}" for k, v in ratios.items()}, f"run {result.seconds:.1f}s")


def test_status_names_family_and_layers(comfy, run):
    family, _, _ = run
    status = " ".join(comfy.ui("8")["text"])
    if family == "sd2":
        assert "SD2" in status and "23" in status
    else:
        assert "refiner" in status and "31" in status
