"""Each node runs on tiny random models through the standalone host, and gives what clip_impl gives."""

import pytest
import torch

from clip_suite.clip_impl.text.chunking import chunk_prompt, describe_chunks
from clip_suite.clip_impl.text.encode import EncodeSettings, encode_prompt
from clip_suite.clip_impl.weights.loading import load_clip
from clip_suite.nodes import NODE_CLASS_MAPPINGS as NODES
from clip_suite.nodes.host import HostedClip

LONG = ", ".join(["a very (detailed:1.3) painting of a [cat] in a garden"] * 8) + " BREAK oil painting"
ENCODE_DEFAULTS = dict(clip_skip=0, chunking="comfy", comma_backtrack=20, weighting="comfy", pooled="first_chunk",
                       empty_prompt="encode")
SIZES = dict(width=1024, height=1024, crop_w=0, crop_h=0, target_width=1024, target_height=1024)


def load(model, model_2="none", architecture="auto", precision="auto", device="cpu"):
    out = NODES["ClipSuiteLoader"]().load(model, model_2, architecture, precision, device)
    return out["result"][0]


def encode(clip, text, **kw):
    out = NODES["ClipSuiteTextEncode"]().encode(clip, text, **{**ENCODE_DEFAULTS, **kw})
    return out["result"][0], out["ui"]["text"][0]


def encode_sdxl(clip, text_g, text_l="", clip_skip_applies_to="both", **kw):
    args = {**ENCODE_DEFAULTS, **SIZES, **kw}
    out = NODES["ClipSuiteTextEncodeSDXL"]().encode(clip, text_g, text_l, clip_skip_applies_to=clip_skip_applies_to, **args)
    return out["result"][0], out["ui"]["text"][0]


def reference(paths, text, text_l=None, **settings):
    model = load_clip(paths)
    return encode_prompt(model, text, EncodeSettings(**{**ENCODE_DEFAULTS, **settings}), text_l=text_l, cache=None)


def assert_conditioning(conditioning, ref, extra=None):
    assert isinstance(conditioning, list) and len(conditioning) == 1
    cond, opts = conditioning[0]
    assert torch.equal(cond, ref.cond) and torch.equal(opts["pooled_output"], ref.pooled)
    assert cond.dtype == torch.float32 and cond.device.type == "cpu"
    assert set(opts) == {"pooled_output"} | set(extra or {})
    for k, v in (extra or {}).items():
        assert opts[k] == v


def test_loader_lists_folder_and_name(standalone):
    choices = NODES["ClipSuiteLoader"].INPUT_TYPES()["required"]["model"][0]
    assert "checkpoints/sdxl.safetensors" in choices
    assert "text_encoders/clip_g.safetensors" in choices
    assert "text_encoders/clip_l.safetensors" in choices  # from the legacy clip/ folder
    assert "diffusers/tiny_sdxl" in choices
    assert not any(c.endswith(".txt") for c in choices)


def test_loader_shares_weights_and_reports(standalone, model_dir):
    out = NODES["ClipSuiteLoader"]().load("checkpoints/sdxl.safetensors", "none", "auto", "auto", "auto")
    clip = out["result"][0]
    assert isinstance(clip, HostedClip) and clip.model.family.name == "sdxl"
    assert "SDXL" in out["ui"]["text"][0]
    again = load("checkpoints/sdxl.safetensors", device="auto")
    assert all(again.model.towers[t] is clip.model.towers[t] for t in ("l", "g"))


def test_loader_errors_name_the_choice(standalone):
    with pytest.raises(ValueError, match="missing.safetensors is not in the checkpoints folders"):
        load("checkpoints/missing.safetensors")
    with pytest.raises(ValueError, match="folder/name"):
        load("loras/x.safetensors")


@pytest.mark.parametrize("clip_skip", [0, 1, 3])
@pytest.mark.parametrize("weighting", ["comfy", "a1111"])
def test_text_encode_sd1(standalone, model_dir, clip_skip, weighting):
    clip = load("checkpoints/sd15.safetensors")
    conditioning, status = encode(clip, LONG, clip_skip=clip_skip, weighting=weighting, chunking="a1111")
    ref = reference(model_dir / "sd15.safetensors", LONG, clip_skip=clip_skip, weighting=weighting, chunking="a1111")
    assert_conditioning(conditioning, ref)
    assert f"CLIP-L layer {4 - clip_skip}/4 (LayerNorm)" in status and f"SD1.x: {ref.chunks} chunks" in status


def test_text_encode_options(standalone, model_dir):
    clip = load("checkpoints/sd21.safetensors")
    settings = dict(clip_skip=-1, pooled="mean", comma_backtrack=5, chunking="a1111", weighting="a1111_no_norm")
    conditioning, status = encode(clip, LONG, **settings)
    assert_conditioning(conditioning, reference(model_dir / "sd21.safetensors", LONG, **settings))
    assert "OpenCLIP-H layer 4/4" in status


@pytest.mark.parametrize("clip_skip,applies_to", [(0, "both"), (1, "both"), (1, "clip_l"), (2, "clip_g"), (-1, "both")])
def test_sdxl_encode_checkpoint(standalone, model_dir, clip_skip, applies_to):
    clip = load("checkpoints/sdxl.safetensors")
    conditioning, status = encode_sdxl(clip, LONG, clip_skip=clip_skip, clip_skip_applies_to=applies_to)
    ref = reference(model_dir / "sdxl.safetensors", LONG, clip_skip=clip_skip, clip_skip_applies_to=applies_to)
    assert_conditioning(conditioning, ref, SIZES)
    assert ("warning:" in status) == (clip_skip == -1) and ("raw final layer" in status) == (clip_skip == -1)


def test_sdxl_encode_pair_with_text_l_and_sizes(standalone, model_dir):
    clip = load("text_encoders/clip_l.safetensors", "text_encoders/clip_g.safetensors")
    sizes = dict(width=832, height=1216, crop_w=16, crop_h=8, target_width=896, target_height=1152)
    out = NODES["ClipSuiteTextEncodeSDXL"]().encode(
        clip, LONG, "a cat", 1, "both", "comfy", 20, "comfy", "first_chunk", "encode", **sizes
    )
    paths = [model_dir / "clip_l.safetensors", model_dir / "clip_g.safetensors"]
    assert_conditioning(out["result"][0], reference(paths, LONG, text_l="a cat", clip_skip=1), sizes)
    assert "(CLIP-L 1, CLIP-G 3)" in out["ui"]["text"][0]


def test_sdxl_empty_prompt_zeros(standalone):
    clip = load("diffusers/tiny_sdxl")
    conditioning, _ = encode_sdxl(clip, "", empty_prompt="zeros")
    cond, opts = conditioning[0]
    assert cond.shape == (1, 77, 128 + 192) and not cond.any() and not opts["pooled_output"].any()


def test_sdxl_node_refuses_sd1(standalone):
    clip = load("checkpoints/sd15.safetensors")
    with pytest.raises(ValueError, match="CLIP Text Encode \\(CLIP skip, long prompts\\)"):
        encode_sdxl(clip, "a cat")


def test_clip_skip_out_of_range_message(standalone):
    clip = load("checkpoints/sdxl.safetensors")
    with pytest.raises(ValueError, match=r"clip_skip 3 is out of range for SDXL .*use -1\.\.2"):
        encode_sdxl(clip, "a cat", clip_skip=3)
    with pytest.raises(ValueError, match=r"use 0\.\.3"):
        encode(load("checkpoints/sd15.safetensors"), "a cat", clip_skip=-1)


def test_clip_input_type_error(standalone):
    with pytest.raises(TypeError, match="expected CLIP Suite's loader output or ComfyUI's CLIP"):
        encode("not a clip", "a cat")


@pytest.mark.parametrize("chunking", ["comfy", "a1111"])
def test_prompt_tokens(chunking):
    text = "masterpiece, (a cat:1.2) in a garden BREAK " + "word, " * 50
    out = NODES["ClipSuitePromptTokens"]().report(text, chunking, 10)
    report = out["result"][0]
    assert out["ui"]["text"] == [report]
    info = describe_chunks(chunk_prompt(text, syntax=chunking, chunking=chunking, comma_backtrack=10))
    assert report.startswith(f"{info['tokens']} tokens, {info['chunks']} chunks ({chunking} chunking)")
    for i, n in enumerate(info["chunk_tokens"], 1):
        assert f"chunk {i}: {n}/75 tokens" in report
    assert "cat:1.2" in report
