"""Similarity: text embeddings equal transformers', scores equal the formula, prompt cleaning, caching, errors."""

import pytest
import torch
import torch.nn.functional as F

from clip_suite.clip_impl.cache import ByteLRUCache
from clip_suite.clip_impl.weights.loading import load_clip
from clip_suite.clip_impl.images.preprocess import preprocess_images
from clip_suite.clip_impl.scoring.similarity import (
    apply_scale,
    image_embeddings,
    prepare_prompt,
    score_images,
    text_embedding,
)
from clip_suite.clip_impl.tokenizer import BOS_ID, EOS_ID, get_tokenizer
from helpers.vision_fixtures import v336_model, v_model, vg_model, vh_model, vision_dir  # noqa: F401

TOL = 1e-5


def _reference_text(text_model, text: str) -> torch.Tensor:
    """transformers' CLIPTextModelWithProjection on [BOS] + ids + [EOS] + EOS padding, normalised."""
    ids = get_tokenizer().encode(text)[:75]
    row = [BOS_ID, *ids, EOS_ID] + [EOS_ID] * (75 - len(ids))
    with torch.no_grad():
        return F.normalize(text_model(input_ids=torch.tensor([row])).text_embeds, dim=-1)[0]


def _reference_images(vision_model, images, size) -> torch.Tensor:
    with torch.no_grad():
        return F.normalize(vision_model(pixel_values=preprocess_images(images, size)).image_embeds, dim=-1)


CASES = [
    (["clip_hf.safetensors"], "l_model", "v_model"),
    (["clip_openclip.safetensors"], "l_model", "v_model"),
    (["clip_l.safetensors", "clip_vision_l.safetensors"], "l_model", "v_model"),
    (["clip_h_folder"], "h_model", "vh_model"),
    (["sdxl.safetensors", "clip_vision_g.safetensors"], "g_model", "vg_model"),
]


@pytest.mark.parametrize("files,text_ref,vision_ref", CASES)
def test_text_image_and_scores_equal_transformers(vision_dir, request, files, text_ref, vision_ref):
    model = load_clip([vision_dir / f for f in files], precision="fp32")
    tmodel, vmodel = request.getfixturevalue(text_ref), request.getfixturevalue(vision_ref)
    prompt = "a photo of a red fox sitting in the snow, golden hour"
    txt = text_embedding(model, prepare_prompt(prompt), cache=None)
    want_txt = _reference_text(tmodel, prompt)
    assert (txt - want_txt).abs().max().item() <= TOL

    images = torch.rand(5, 45, 38, 3, generator=torch.Generator().manual_seed(3))
    size = vmodel.config.image_size
    img = image_embeddings(model, images, batch_size=2)
    want_img = _reference_images(vmodel, images, size)
    assert (img - want_img).abs().max().item() <= TOL

    cos = want_img @ want_txt
    for scale in ("cosine", "clipscore_100", "clipscore_2_5"):
        result = score_images(model, images, prompt, scale, batch_size=3, cache=None)
        assert len(result.scores) == 5
        assert max(abs(a - b) for a, b in zip(result.cosines, cos.tolist())) <= TOL
        assert result.scores == pytest.approx(apply_scale(torch.tensor(result.cosines), scale).tolist(), abs=1e-9)
    assert result.best_index == int(cos.argmax())


def test_scales_by_hand():
    cos = torch.tensor([-0.2, 0.0, 0.1, 0.31])
    assert apply_scale(cos, "clipscore_100").tolist() == pytest.approx([0.0, 0.0, 10.0, 31.0])
    assert apply_scale(cos, "clipscore_2_5").tolist() == pytest.approx([0.0, 0.0, 0.25, 0.775])
    assert apply_scale(cos, "cosine").tolist() == pytest.approx(cos.tolist())
    with pytest.raises(ValueError, match="scale='percent'; use one of clipscore_100"):
        apply_scale(cos, "percent")


@pytest.mark.parametrize(
    "text,syntax,cleaned",
    [
        ("a (red:1.3) fox BREAK in the ((snow))", "comfy", "a red fox in the snow"),
        ("embedding:bad_hands, a cat, embedding:style.pt", "comfy", ", a cat,"),
        ("[blurry] (cat:1.2) on a mat", "a1111", "blurry cat on a mat"),
        ("[blurry] (cat:1.2)", "comfy", "[blurry] cat"),  # [x] is literal in ComfyUI's syntax
        ("a \\(bracketed\\) word", "comfy", "a (bracketed) word"),
        ("(cat:1.2) BREAK dog", "none", "(cat:1.2) dog"),
    ],
)
def test_prompt_cleaning(text, syntax, cleaned):
    p = prepare_prompt(text, syntax)
    assert p.cleaned == cleaned and p.text == text
    assert list(p.ids) == get_tokenizer().encode(cleaned) and not p.notes


def test_long_prompts_are_truncated_with_a_note():
    exact = prepare_prompt(" ".join(["cat"] * 75))
    assert len(exact.ids) == 75 and not exact.notes
    long = prepare_prompt(" ".join(["cat"] * 74 + ["dog", "bird"]))
    assert len(long.ids) == 75 and long.ids[-1] == get_tokenizer().encode("dog")[0]
    assert "truncated to 75 of its 76 tokens" in long.notes[0]


def test_empty_prompts_are_refused():
    for text in ("", "   ", "BREAK", "embedding:foo", "BREAK BREAK", "embedding:a, embedding:b", "((, :1.2))"):
        with pytest.raises(ValueError, match="no words to score"):
            prepare_prompt(text)


def test_text_embeddings_are_cached_per_prompt(vision_dir):
    model = load_clip(vision_dir / "clip_hf.safetensors")
    cache = ByteLRUCache(1 << 20)
    a = text_embedding(model, prepare_prompt("a cat"), cache)
    assert cache.misses == 1 and len(cache) == 1
    assert text_embedding(model, prepare_prompt("a (cat:1.4)"), cache) is a  # same words, same entry
    assert cache.hits == 1
    b = text_embedding(model, prepare_prompt("a dog"), cache)
    assert len(cache) == 2 and not torch.equal(a, b)


def test_report_and_notes(vision_dir):
    model = load_clip(vision_dir / "clip_hf.safetensors")
    images = torch.rand(3, 32, 32, 3, generator=torch.Generator().manual_seed(1))
    result = score_images(model, images, " ".join(["word"] * 80), "cosine")
    report = result.report
    assert "3 images" in report and f"best #{result.best_index}" in report and "note: prompt truncated" in report
    assert len([line for line in report.splitlines() if line.startswith("  #")]) == 3
    assert result.mean == pytest.approx(sum(result.scores) / 3)


def test_scoring_errors(vision_dir):
    text_only = load_clip(vision_dir / "clip_l.safetensors")
    with pytest.raises(ValueError, match="no vision tower.*clip_vision"):
        score_images(text_only, torch.rand(1, 8, 8, 3), "a cat")
    model = load_clip(vision_dir / "clip_hf.safetensors")
    bad = torch.rand(2, 8, 8, 3)
    bad[1, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="image 1 hold"):
        score_images(model, bad, "a cat")
    with pytest.raises(ValueError, match="4 dimensions|3 dimensions"):
        score_images(model, torch.rand(8, 8, 3), "a cat")
    with pytest.raises(ValueError, match="batch_size=0"):
        image_embeddings(model, torch.rand(1, 8, 8, 3), batch_size=0)
