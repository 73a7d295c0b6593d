"""Assembly against the DESIGN 5 recipe run on transformers' towers (tests/recipe_reference.py)."""

import pytest
import torch

from clip_suite.clip_impl.cache import ByteLRUCache
from clip_suite.clip_impl.text.chunking import chunk_prompt
from clip_suite.clip_impl.text.encode import EncodeSettings, encode_prompt
from clip_suite.clip_impl.weights.loading import load_clip
from helpers import compare
from helpers.recipe_reference import project, tower_reference

LONG = ", ".join(["a very (detailed:1.3) painting of a [cat] in a garden"] * 8) + ", (blurry:0.8)"
PROMPTS = ["a photo of a cat", LONG, "first part BREAK second (part:1.2)", ""]


def assert_close(ours, ref, what):
    compare.assert_close(ours, ref, what, rel=1e-5, floor=1.0)


def reference(models, family, text, settings, text_l=None):
    syntax = {"comfy": "comfy", "none": "none"}.get(settings.weighting, "a1111")
    per_tower = {}
    for role, (model, pad, layer, ln) in models.items():
        t = text_l if (role == "l" and text_l) else text
        chunks = chunk_prompt(t, syntax=syntax, chunking=settings.chunking, comma_backtrack=settings.comma_backtrack)
        per_tower[role] = (model, pad, layer, ln, chunks)
    n = max(len(v[4]) for v in per_tower.values())
    conds, pooled = [], None
    for role, (model, pad, layer, ln, chunks) in per_tower.items():
        chunks = chunks + [chunk_prompt("")[0]] * (n - len(chunks))
        ids = [c.ids(pad) for c in chunks]
        weights = [c.weights() for c in chunks]
        z, p = tower_reference(model, ids, weights, layer, ln, pad, settings.weighting)
        conds.append(z)
        if role == family["pooled"]:
            pooled = project(model, p[0:1]) if family["project"] else p[0:1]
    return torch.cat(conds, dim=-1), pooled


@pytest.mark.parametrize("prompt", PROMPTS)
@pytest.mark.parametrize("clip_skip", [0, 1, 2, -1])  # the tiny CLIP-L has 4 layers: 2 selects layer 1
def test_sdxl_matches_recipe(model_dir, l_model, g_model, prompt, clip_skip):
    model = load_clip(model_dir / "sdxl.safetensors")
    settings = EncodeSettings(clip_skip=clip_skip)
    out = encode_prompt(model, prompt, settings, cache=None)
    models = {"l": (l_model, 49407, 3 - clip_skip, False), "g": (g_model, 0, 4 - clip_skip, False)}
    cond, pooled = reference(models, {"pooled": "g", "project": True}, prompt, settings)
    assert_close(out.cond, cond, "cond")
    assert_close(out.pooled, pooled, "pooled")
    assert out.cond.shape[-1] == 128 + 192 and out.pooled.shape == (1, 96)
    assert bool(out.warnings) == (clip_skip == -1)


@pytest.mark.parametrize("prompt", PROMPTS)
@pytest.mark.parametrize("clip_skip", [0, 1, 3])
@pytest.mark.parametrize("weighting", ["comfy", "a1111", "a1111_no_norm"])
def test_sd1_matches_recipe(model_dir, l_model, prompt, clip_skip, weighting):
    model = load_clip(model_dir / "sd15.safetensors")
    settings = EncodeSettings(clip_skip=clip_skip, weighting=weighting, chunking="a1111" if weighting != "comfy" else "comfy")
    out = encode_prompt(model, prompt, settings, cache=None)
    cond, pooled = reference({"l": (l_model, 49407, 4 - clip_skip, True)}, {"pooled": "l", "project": False}, prompt, settings)
    assert_close(out.cond, cond, "cond")
    assert_close(out.pooled, pooled, "pooled")


def test_sd2_penultimate_with_layer_norm(model_dir, h_model):
    model = load_clip(model_dir / "sd21.safetensors")
    for clip_skip, layer in ((0, 3), (-1, 4), (2, 1)):
        out = encode_prompt(model, LONG, EncodeSettings(clip_skip=clip_skip), cache=None)
        cond, pooled = reference({"h": (h_model, 0, layer, True)}, {"pooled": "h", "project": True}, LONG, EncodeSettings())
        assert_close(out.cond, cond, f"cond clip_skip {clip_skip}")
        assert_close(out.pooled, pooled, "pooled")
        assert out.layers["h"].layer == layer and out.layers["h"].layer_norm


def test_sdxl_separate_prompts_pad_the_shorter_tower(model_dir, l_model, g_model):
    model = load_clip(model_dir / "sdxl.safetensors")
    out = encode_prompt(model, "short", EncodeSettings(), text_l=LONG, cache=None)
    assert out.tower_chunks == {"l": 2, "g": 1} and out.cond.shape == (1, 154, 320)
    models = {"l": (l_model, 49407, 3, False), "g": (g_model, 0, 4, False)}
    cond, pooled = reference(models, {"pooled": "g", "project": True}, "short", EncodeSettings(), text_l=LONG)
    assert_close(out.cond, cond, "cond")


def test_clip_skip_applies_to_one_tower(model_dir):
    model = load_clip(model_dir / "sdxl.safetensors")
    out = encode_prompt(model, "x", EncodeSettings(clip_skip=2, clip_skip_applies_to="clip_g"), cache=None)
    assert out.layers["l"].layer == 3 and out.layers["g"].layer == 2


def test_pooled_mean_and_zeros(model_dir):
    model = load_clip(model_dir / "sdxl.safetensors")
    first = encode_prompt(model, LONG, EncodeSettings(), cache=None)
    mean = encode_prompt(model, LONG, EncodeSettings(pooled="mean"), cache=None)
    assert torch.equal(first.cond, mean.cond) and not torch.allclose(first.pooled, mean.pooled)
    zeros = encode_prompt(model, "  ", EncodeSettings(empty_prompt="zeros"), cache=None)
    assert zeros.cond.shape == (1, 77, 320) and not zeros.cond.any() and not zeros.pooled.any()
    encoded = encode_prompt(model, "", EncodeSettings(), cache=None)
    assert encoded.cond.abs().sum() > 0


def test_cache_reuses_chunks_and_gives_identical_output(model_dir):
    model = load_clip(model_dir / "sdxl.safetensors")
    cache = ByteLRUCache(64 * 1024 * 1024)
    cold = encode_prompt(model, LONG, EncodeSettings(), cache=cache)
    misses = cache.misses
    warm = encode_prompt(model, LONG, EncodeSettings(), cache=cache)
    assert torch.equal(cold.cond, warm.cond) and torch.equal(cold.pooled, warm.pooled)
    assert cache.misses == misses  # nothing re-encoded
    edited = encode_prompt(model, LONG + ", and a dog", EncodeSettings(), cache=cache)
    assert torch.equal(edited.cond[:, :77], cold.cond[:, :77])


def test_clip_skip_out_of_range_is_a_clear_error(model_dir):
    model = load_clip(model_dir / "sd15.safetensors")
    with pytest.raises(ValueError, match=r"clip_skip 4 is out of range for SD1.x .*use 0..3"):
        encode_prompt(model, "x", EncodeSettings(clip_skip=4))
    with pytest.raises(ValueError, match=r"clip_skip -1 is out of range"):
        encode_prompt(model, "x", EncodeSettings(clip_skip=-1))
