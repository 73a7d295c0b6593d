"""A1111 prompts in our encoders (steps/scheduler, AND, tags) and the A1111 Parameters node, through the
standalone host on tiny random models."""

from __future__ import annotations

import pytest
import torch
from PIL import Image, PngImagePlugin

from clip_suite.clip_impl.text.encode import EncodeSettings, encode_prompt
from clip_suite.clip_impl.weights.loading import load_clip
from clip_suite.clip_impl.a1111.schedule import step_texts
from clip_suite.clip_impl.a1111.sigmas import calculate_sigmas, percent_to_sigma
from clip_suite.nodes import NODE_CLASS_MAPPINGS as NODES
from clip_suite.nodes import host

DEFAULTS = dict(clip_skip=0, chunking="a1111", comma_backtrack=20, weighting="a1111", pooled="first_chunk",
                empty_prompt="encode")
SIZES = dict(width=1024, height=1024, crop_w=0, crop_h=0, target_width=1024, target_height=1024)


def load(name):
    return NODES["ClipSuiteLoader"]().load(name, "none", "auto", "auto", "cpu")["result"][0]


def active(conditioning, sigma):
    """Indexes of the entries ComfyUI's get_area_and_mult rule uses at ``sigma``."""
    out = []
    for i, (_, opts) in enumerate(conditioning):
        hi = percent_to_sigma(opts["start_percent"]) if "start_percent" in opts else float("inf")
        lo = percent_to_sigma(opts["end_percent"]) if "end_percent" in opts else 0.0
        if lo <= sigma <= hi:
            out.append(i)
    return out


@pytest.mark.parametrize("scheduler", ["normal", "karras", "beta", "ddim_uniform"])
def test_schedule_entries_one_per_step(standalone, model_dir, scheduler):
    clip = load("checkpoints/sd15.safetensors")
    prompt = "a [dog:cat:0.5] on a [red|blue] mat, [sun::7]"
    steps = 12
    out = NODES["ClipSuiteTextEncode"]().encode(clip, prompt, **DEFAULTS, steps=steps, scheduler=scheduler)
    conditioning, status = out["result"][0], out["ui"]["text"][0]
    model = load_clip([str(model_dir / "sd15.safetensors")])
    sigmas = calculate_sigmas(scheduler, steps)
    texts = step_texts(prompt, steps)
    refs = {t: encode_prompt(model, t, EncodeSettings(**DEFAULTS), cache=None).cond for t in set(texts)}
    for step in range(len(sigmas) - 1):  # ddim_uniform runs 13 steps for 12: the last uses A1111's last text
        hits = active(conditioning, float(sigmas[step]))
        assert len(hits) == 1, (scheduler, step, hits)
        torch.testing.assert_close(conditioning[hits[0]][0], refs[texts[min(step, steps - 1)]], rtol=1e-6, atol=1e-6)
    assert f"over {steps} steps ({scheduler})" in status
    assert len({id(c[0]) for c in conditioning}) <= len(set(texts)), "each distinct text is encoded once"


def test_steps_zero_keeps_old_output_and_notes_schedule(standalone):
    clip = load("checkpoints/sd15.safetensors")
    out = NODES["ClipSuiteTextEncode"]().encode(clip, "a [dog:cat:0.5]", **DEFAULTS)
    conditioning, status = out["result"][0], out["ui"]["text"][0]
    assert len(conditioning) == 1 and set(conditioning[0][1]) == {"pooled_output"}
    assert "schedule syntax" in status


def test_tags_and_and(standalone, model_dir):
    clip = load("checkpoints/sd15.safetensors")
    out = NODES["ClipSuiteTextEncode"]().encode(clip, "a cat <lora:foo:0.8> AND a bird :0.5", **DEFAULTS)
    conditioning, status = out["result"][0], out["ui"]["text"][0]
    assert [c[1]["strength"] for c in conditioning] == [1.0, 0.5]
    assert "LoRA tags found: foo 0.8" in status and "multiply the sampler's cfg by 1.5" in status
    model = load_clip([str(model_dir / "sd15.safetensors")])
    ref = encode_prompt(model, "a cat ", EncodeSettings(**DEFAULTS), cache=None)
    torch.testing.assert_close(conditioning[0][0], ref.cond)
    comfy = NODES["ClipSuiteTextEncode"]().encode(clip, "a cat <lora:foo:0.8> AND b", **{**DEFAULTS, "weighting": "comfy"})
    assert len(comfy["result"][0]) == 1 and "encoded as words" in comfy["ui"]["text"][0]


def test_sdxl_schedule_with_text_l(standalone):
    clip = load("checkpoints/sdxl.safetensors")
    out = NODES["ClipSuiteTextEncodeSDXL"]().encode(
        clip, "[a:b:3]", "[c|d]", clip_skip_applies_to="both", **DEFAULTS, **SIZES, steps=6, scheduler="karras")
    conditioning = out["result"][0]
    assert len(conditioning) == 5  # steps 0-1 (a, c), 2 (a, d), 3 (a, c), 4 (b, d), 5 (b, c)
    assert all(c[1]["width"] == 1024 and "pooled_output" in c[1] for c in conditioning)


INFOTEXT = ("a cat [dog:cat:0.5] <lora:foo:0.8>\nNegative prompt: ugly\nSteps: 24, Sampler: Euler a, CFG scale: 6, "
            "Seed: 5, Size: 512x640, Clip skip: 2, Version: v1.10.1")


def test_parameters_node_pasted(standalone):
    out = NODES["ClipSuiteA1111Parameters"]().read(INFOTEXT, "sd1")
    (pos, neg, skip, applies, weighting, chunking, steps, cfg, seed, w, h, loras, report) = out["result"]
    assert (pos, neg, skip, applies, weighting, chunking) == ("a cat [dog:cat:0.5] <lora:foo:0.8>", "ugly", 1, "both",
                                                              "a1111", "a1111")
    assert (steps, cfg, seed, w, h, loras) == (24, 6.0, 5, 512, 640, "foo:0.8")
    assert "source: pasted parameters" in report
    assert NODES["ClipSuiteA1111Parameters"].RETURN_NAMES[3] == "clip_skip_applies_to"


def test_parameters_node_reads_images(standalone, tmp_path, monkeypatch):
    monkeypatch.setenv(host.INPUT_ENV, str(tmp_path))
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", INFOTEXT)
    Image.new("RGB", (8, 8)).save(tmp_path / "a1111.png", pnginfo=info)
    img = Image.new("RGB", (8, 8))
    exif = img.getexif()
    exif.get_ifd(0x8769)[0x9286] = b"UNICODE\x00" + INFOTEXT.encode("utf-16-be")
    img.save(tmp_path / "a1111.jpg", exif=exif)
    Image.new("RGB", (8, 8)).save(tmp_path / "plain.png")
    choices = NODES["ClipSuiteA1111Parameters"].INPUT_TYPES()["optional"]["image"][0]
    assert choices == ["none", "a1111.jpg", "a1111.png", "plain.png"]
    for name in ("a1111.png", "a1111.jpg"):
        result = NODES["ClipSuiteA1111Parameters"]().read("", "sd1", name)["result"]
        assert result[0] == "a cat [dog:cat:0.5] <lora:foo:0.8>" and result[2] == 1, name
    with pytest.raises(ValueError, match="holds no A1111 'parameters'"):
        NODES["ClipSuiteA1111Parameters"]().read("", "sd1", "plain.png")
    with pytest.raises(ValueError, match="not in the input folder"):
        NODES["ClipSuiteA1111Parameters"]().read("", "sd1", "../outside.png")
