"""LoRA-patched text encoders inside a real ComfyUI: ComfyUI's LoraLoader on a native CLIP, fed into our
encoders, and our ClipSuiteLoraLoader on our loader, both against CLIPTextEncode / CLIPTextEncodeSDXL on
the LoraLoader-patched CLIP, at CLIP strengths 0.5 and 1.0.

The LoRA files are kohya-format random-weight text-encoder LoRAs (plus a few UNet keys, as real ones
have), in a temporary ``loras`` folder. LoraLoader needs a MODEL input and there is no diffusion model in
this harness, so a test-only node calls the real ``nodes.LoraLoader().load_lora`` with ``model=None`` and
``strength_model=0`` (``comfy.sd.load_lora_for_models`` skips a None model): the same code path for the CLIP.
"""

import pytest
import torch
from safetensors.torch import save_file

from comfy_harness import (
    LONG_PROMPT as PROMPT, SIZES, assert_conditioning_close, sink, suite_encode, suite_encode_sdxl, suite_loader,
)

TARGETS = ("self_attn_q_proj", "self_attn_k_proj", "self_attn_v_proj", "self_attn_out_proj", "mlp_fc1", "mlp_fc2")
STRENGTHS = (0.5, 1.0)


def kohya_te(prefix: str, width: int, layers: int, rank: int, alpha: float, g) -> dict:
    """Random kohya text-encoder LoRA tensors for every layer and Linear (fp16, as trainers save them)."""
    sd = {}
    for layer in range(layers):
        for target in TARGETS:
            out_dim, in_dim = {"mlp_fc1": (4 * width, width), "mlp_fc2": (width, 4 * width)}.get(target, (width, width))
            name = f"{prefix}_text_model_encoder_layers_{layer}_{target}"
            sd[f"{name}.lora_up.weight"] = (torch.randn(out_dim, rank, generator=g) * 0.05).half()
            sd[f"{name}.lora_down.weight"] = (torch.randn(rank, in_dim, generator=g) * 0.05).half()
            sd[f"{name}.alpha"] = torch.tensor(alpha, dtype=torch.float16)
    return sd


UNET = {"lora_unet_mid_block_attentions_0_proj_in.lora_up.weight": torch.zeros(1280, 4).half(),
        "lora_unet_mid_block_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 1280).half(),
        "lora_unet_mid_block_attentions_0_proj_in.alpha": torch.tensor(4.0).half()}


@pytest.fixture(scope="module")
def loras(comfy, tmp_path_factory):
    d = tmp_path_factory.mktemp("cs_loras")
    g = torch.Generator().manual_seed(31)
    save_file({**kohya_te("lora_te", 768, 12, rank=8, alpha=4.0, g=g), **UNET}, str(d / "cs_sd15_te.safetensors"))
    sdxl = {**kohya_te("lora_te1", 768, 12, rank=4, alpha=2.0, g=g), **kohya_te("lora_te2", 1280, 32, rank=4, alpha=2.0, g=g)}
    save_file({**sdxl, **UNET}, str(d / "cs_sdxl_te.safetensors"))
    comfy.folder_paths.add_model_folder_path("loras", str(d), is_default=True)
    yield d
    comfy.folder_paths.folder_names_and_paths["loras"][0].remove(str(d))
    comfy.release()


def native_lora(clip_node, name, strength):
    return {"class_type": "ClipSuiteTestLoraLoaderClip",
            "inputs": {"clip": [clip_node, 0], "lora_name": name, "strength_clip": strength}}


def our_lora(clip_node, name, strength):
    return {"class_type": "ClipSuiteLoraLoader", "inputs": {"clip": [clip_node, 0], "lora_name": name, "strength": strength}}








def test_sd15_lora(comfy, loras):
    comfy.release()
    graph = {
        "1": {"class_type": "CLIPLoader", "inputs": {"clip_name": "clip_l.safetensors", "type": "stable_diffusion",
                                                     "device": "default"}},
        "2": native_lora("1", "cs_sd15_te.safetensors", 0.5), "3": native_lora("1", "cs_sd15_te.safetensors", 1.0),
        "4": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["2", 0], "text": PROMPT}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["3", 0], "text": PROMPT}},
        "6": suite_encode("2", PROMPT), "7": suite_encode("3", PROMPT),
        "8": suite_loader("checkpoints/sd15_te.safetensors"),
        "9": our_lora("8", "cs_sd15_te.safetensors", 0.5), "10": our_lora("8", "cs_sd15_te.safetensors", 1.0),
        "11": suite_encode("9", PROMPT), "12": suite_encode("10", PROMPT),
        "13": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 0], "text": PROMPT}}, "14": suite_encode("8", PROMPT),
        # a chain: the same LoRA again at 1.0 on top of the 0.5 one (patches add up, rounded once)
        "15": native_lora("2", "cs_sd15_te.safetensors", 1.0),
        "16": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["15", 0], "text": PROMPT}},
        "17": our_lora("9", "cs_sd15_te.safetensors", 1.0), "18": suite_encode("17", PROMPT),
        "99": sink("4", "5", "6", "7", "11", "12", "13", "14", "16", "18"),
    }
    run = comfy.run(graph)
    ratios = {}
    for strength, ref, native_in, mine in ((0.5, "4", "6", "11"), (1.0, "5", "7", "12")):
        r = comfy.output(ref)
        ratios[f"LoraLoader CLIP into ours @{strength}"] = assert_conditioning_close(
            comfy.output(native_in), r, f"SD1.5 LoraLoader {strength} into ours")
        ratios[f"ClipSuiteLoraLoader @{strength}"] = assert_conditioning_close(
            comfy.output(mine), r, f"SD1.5 ClipSuiteLoraLoader {strength}")
        # Our patch and ComfyUI's give the same weights bit for bit (fp32 sums rounded to fp16 alike).
        assert torch.equal(comfy.output(native_in)[0][0], comfy.output(mine)[0][0]), f"weights differ at {strength}"
    ratios["unpatched, after"] = assert_conditioning_close(comfy.output("14"), comfy.output("13"), "SD1.5 unpatched")
    ratios["chain 0.5 + 1.0"] = assert_conditioning_close(comfy.output("18"), comfy.output("16"), "SD1.5 chain")
    base, half, full = (comfy.output(n)[0][0] for n in ("13", "4", "5"))
    assert (half - base).abs().max() > 1e-2 and (full - half).abs().max() > 1e-2  # strength matters
    status = comfy.ui("10")["text"][0]
    assert "LoRA cs_sd15_te.safetensors at strength 1: CLIP-L 72 weights, rank 8" in status, status
    print("SD1.5 LoRA max|diff|/max|ref|:", {k: f"{v:.2e}" for k, v in ratios.items()}, f"run {run.seconds:.1f}s")
    comfy.release()


def test_sdxl_lora(comfy, loras):
    comfy.release()
    graph = {
        "1": {"class_type": "DualCLIPLoader", "inputs": {
            "clip_name1": "clip_l.safetensors", "clip_name2": "clip_g.safetensors", "type": "sdxl", "device": "default"}},
        "2": native_lora("1", "cs_sdxl_te.safetensors", 0.5), "3": native_lora("1", "cs_sdxl_te.safetensors", 1.0),
        "4": {"class_type": "CLIPTextEncodeSDXL", "inputs": {"clip": ["2", 0], "text_g": PROMPT, "text_l": PROMPT, **SIZES}},
        "5": {"class_type": "CLIPTextEncodeSDXL", "inputs": {"clip": ["3", 0], "text_g": PROMPT, "text_l": PROMPT, **SIZES}},
        "6": suite_encode_sdxl("2", PROMPT), "7": suite_encode_sdxl("3", PROMPT),
        "99": sink("4", "5", "6", "7"),
    }
    run = comfy.run(graph)
    refs = {0.5: comfy.output("4"), 1.0: comfy.output("5")}
    ratios = {f"LoraLoader CLIP into ours @{s}": assert_conditioning_close(comfy.output(n), refs[s], f"SDXL native {s}")
              for s, n in ((0.5, "6"), (1.0, "7"))}
    native_in_ours = {0.5: comfy.output("6")[0][0], 1.0: comfy.output("7")[0][0]}
    comfy.release()  # free the native CLIP and its converted copies before loading ours
    run2 = comfy.run({"8": suite_loader("checkpoints/sdxl_te.safetensors"),
                      "9": our_lora("8", "cs_sdxl_te.safetensors", 0.5), "10": our_lora("8", "cs_sdxl_te.safetensors", 1.0),
                      "11": suite_encode_sdxl("9", PROMPT), "12": suite_encode_sdxl("10", PROMPT), "99": sink("11", "12")})
    for s, n in ((0.5, "11"), (1.0, "12")):
        ratios[f"ClipSuiteLoraLoader @{s}"] = assert_conditioning_close(comfy.output(n), refs[s], f"SDXL ours {s}")
        assert torch.equal(comfy.output(n)[0][0], native_in_ours[s]), f"patched weights differ at {s}"
    status = comfy.ui("9")["text"][0]
    assert "CLIP-L 72 weights, CLIP-G 192 weights, rank 4" in status, status
    hosted = comfy.output("9")
    base = comfy.output("8")
    assert all(hosted.patchers[t] is not base.patchers[t] for t in "lg")  # new towers, their own patchers
    print("SDXL LoRA max|diff|/max|ref|:", {k: f"{v:.2e}" for k, v in ratios.items()},
          f"runs {run.seconds:.1f}s, {run2.seconds:.1f}s")
    comfy.release()
