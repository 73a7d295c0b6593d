"""The encoder nodes package ``encode_scheduled``'s result as it is: one conditioning entry per library entry,
with the same tensors, timestep ranges and strengths, and the library's schedule lines in the status."""

import pytest
import torch

from clip_suite.clip_impl import EncodeSettings, encode_scheduled, load_clip
from clip_suite.nodes import NODE_CLASS_MAPPINGS as NODES

DEFAULTS = dict(clip_skip=0, chunking="a1111", comma_backtrack=20, weighting="a1111", pooled="first_chunk",
                empty_prompt="encode")
SIZES = dict(width=1024, height=1024, crop_w=0, crop_h=0, target_width=1024, target_height=1024)


def load(name):
    return NODES["ClipSuiteLoader"]().load(name, "none", "auto", "auto", "cpu")["result"][0]


def assert_matches(conditioning, status, result, extra=None):
    assert len(conditioning) == len(result.entries)
    for (cond, options), entry in zip(conditioning, result.entries):
        torch.testing.assert_close(cond, entry.encoded.cond, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(options["pooled_output"], entry.encoded.pooled, rtol=1e-6, atol=1e-6)
        expected = dict(extra or {})
        if entry.start_percent is not None:
            expected.update(start_percent=entry.start_percent, end_percent=entry.end_percent)
        if entry.strength is not None:
            expected["strength"] = entry.strength
        assert {k: v for k, v in options.items() if k != "pooled_output"} == expected
    groups = [next(i for i, e in enumerate(result.entries) if e.encoded is entry.encoded) for entry in result.entries]
    assert [next(i for i, c in enumerate(conditioning) if c[0] is cond) for cond, _ in conditioning] == groups
    lines = status.split("\n")
    assert lines[len(lines) - len(result.status_lines):] == list(result.status_lines)


@pytest.mark.parametrize("prompt, steps, scheduler", [
    ("a [dog:cat:0.5] on a [red|blue] mat, [sun::7]", 12, "ddim_uniform"),
    ("a cat <lora:foo:0.8> [x|y] AND a bird :0.5", 8, "karras"),
    ("a [dog:cat:0.5]", 0, "normal"),
    ("a cat", 20, "normal"),
])
def test_node_conditioning_is_the_librarys(standalone, model_dir, prompt, steps, scheduler):
    out = NODES["ClipSuiteTextEncode"]().encode(load("checkpoints/sd15.safetensors"), prompt, **DEFAULTS, steps=steps,
                                                scheduler=scheduler)
    model = load_clip([str(model_dir / "sd15.safetensors")])
    result = encode_scheduled(model, prompt, EncodeSettings(**DEFAULTS), steps, scheduler, cache=None)
    assert_matches(out["result"][0], out["ui"]["text"][0], result)
    assert out["ui"]["text"][0].startswith("SD1.x: 1 chunk\nclip_skip 0: ")


def test_sdxl_node_conditioning_is_the_librarys(standalone, model_dir):
    out = NODES["ClipSuiteTextEncodeSDXL"]().encode(
        load("checkpoints/sdxl.safetensors"), "[a:b:3] AND c", "[c|d]", clip_skip_applies_to="both", **DEFAULTS,
        **SIZES, steps=6, scheduler="karras")
    model = load_clip([str(model_dir / "sdxl.safetensors")])
    settings = EncodeSettings(clip_skip_applies_to="both", **DEFAULTS)
    result = encode_scheduled(model, "[a:b:3] AND c", settings, 6, "karras", text_l="[c|d]", cache=None)
    assert_matches(out["result"][0], out["ui"]["text"][0], result, extra=SIZES)


def test_text_l_note_on_a_model_without_clip_l(standalone):
    out = NODES["ClipSuiteTextEncodeSDXL"]().encode(
        load("checkpoints/refiner.safetensors"), "[a|b]", "l text", clip_skip_applies_to="both", **DEFAULTS, **SIZES,
        steps=4, scheduler="normal")
    status = out["ui"]["text"][0]
    assert "note: text_l is unused" in status
    assert status.index("note: text_l is unused") < status.index("schedule: 2 prompts over 4 steps (normal)")
