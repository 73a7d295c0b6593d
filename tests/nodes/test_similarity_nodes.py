"""The scoring nodes on tiny random CLIPs through the standalone host: the scores clip_impl gives (and
transformers' towers give), in batch order, top_k/min_score selection, and clear errors."""

import types

import pytest
import torch
import torch.nn.functional as F

from clip_suite.clip_impl.weights.loading import load_clip
from clip_suite.clip_impl.images.preprocess import preprocess_images
from clip_suite.clip_impl.scoring.similarity import SimilarityResult, prepare_prompt, score_images
from clip_suite.clip_impl.tokenizer import BOS_ID, EOS_ID, get_tokenizer
from clip_suite.nodes.similarity import ranking
from helpers.scoring_fixtures import (  # noqa: F401  (fixtures)
    PAIRS, PROMPT, load, rand_images, scoring_host, scoring_root, select, similarity,
)
from helpers.vision_fixtures import v336_model, v_model, vg_model, vh_model, vision_dir  # noqa: F401


@pytest.fixture(scope="module")
def images():
    return rand_images(6, seed=5)


@pytest.mark.parametrize("pair", sorted(PAIRS))
@pytest.mark.parametrize("scale", ["clipscore_100", "clipscore_2_5", "cosine"])
def test_scores_equal_clip_impl(scoring_host, vision_dir, images, pair, scale):
    choices, files = PAIRS[pair]
    out = similarity(load(*choices), images, scale=scale)
    want = score_images(load_clip([vision_dir / f for f in files], with_vision=True), images, PROMPT, scale, cache=None)
    scores, mean, best, report = out["result"]
    assert isinstance(scores, list) and len(scores) == len(images) and all(type(s) is float for s in scores)
    assert scores == want.scores and mean == want.mean and best == want.best_index and report == want.report
    assert out["ui"] == {"text": [report], "scores": scores}
    assert mean == pytest.approx(sum(scores) / len(scores)) and type(best) is int
    assert f"{len(images)} images: mean" in report and f"#{len(images) - 1}:" in report


def test_cosines_equal_transformers(scoring_host, images, l_model, v_model):
    """An independent check: transformers' CLIPTextModelWithProjection and CLIPVisionModelWithProjection."""
    ids = get_tokenizer().encode(PROMPT)
    row = torch.tensor([[BOS_ID, *ids, EOS_ID] + [EOS_ID] * (75 - len(ids))])
    with torch.no_grad():
        txt = F.normalize(l_model(input_ids=row).text_embeds, dim=-1)[0]
        img = F.normalize(v_model(pixel_values=preprocess_images(images, 32)).image_embeds, dim=-1)
    scores = similarity(load(*PAIRS["text + clip_vision"][0]), images)["result"][0]
    assert max(abs(a - b) for a, b in zip(scores, (img @ txt).tolist())) <= 1e-5
    assert -1 <= min(scores) < max(scores) <= 1


def test_batch_order(scoring_host, images):
    clip = load(*PAIRS["full CLIP"][0])
    scores = similarity(clip, images)["result"][0]
    alone = [similarity(clip, images[i : i + 1])["result"][0][0] for i in range(len(images))]
    assert scores == pytest.approx(alone, abs=1e-6)
    assert len(set(scores)) == len(scores)  # distinct images: the order is visible
    assert similarity(clip, images.flip(0))["result"][0] == pytest.approx(scores[::-1], abs=1e-6)
    result = similarity(clip, images)["result"]
    assert result[2] == max(range(len(scores)), key=scores.__getitem__)


def test_select_top_k_best_first(scoring_host, images):
    clip = load(*PAIRS["full CLIP"][0])
    scores = similarity(clip, images)["result"][0]
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    for k in (1, 3, len(images), len(images) + 10):
        out = select(clip, images, top_k=k, min_score=-1.0)
        kept, kept_scores = out["result"]
        want = order[:k]
        assert torch.equal(kept, images[want]) and kept_scores == [scores[i] for i in want]
        assert out["ui"]["scores"] == kept_scores and kept_scores == sorted(kept_scores, reverse=True)
        assert f"kept {len(want)} of {len(images)} images" in out["ui"]["text"][0]


def test_select_min_score(scoring_host, images):
    clip = load(*PAIRS["full CLIP"][0])
    scores = sorted(similarity(clip, images)["result"][0], reverse=True)
    threshold = (scores[1] + scores[2]) / 2  # exactly two images reach it
    kept, kept_scores = select(clip, images, top_k=5, min_score=threshold)["result"]
    assert kept.shape[0] == 2 and kept_scores == scores[:2]
    kept, kept_scores = select(clip, images, top_k=5, min_score=scores[3])["result"]  # inclusive
    assert kept_scores == scores[:4]
    kept, kept_scores = select(clip, images, top_k=1, min_score=threshold)["result"]
    assert kept_scores == scores[:1]


def test_select_none_pass(scoring_host, images):
    clip = load(*PAIRS["full CLIP"][0])
    out = select(clip, images, top_k=2, min_score=1.0)  # a cosine of 1 is out of reach
    assert out["result"] == (None, None)  # standalone host; ComfyUI gets its silent ExecutionBlocker
    assert out["ui"]["scores"] == []
    assert out["ui"]["text"][0].startswith("kept none of 6 images: no score reached min_score 1")


def test_select_on_clipscore_scale(scoring_host):
    clip = load(*PAIRS["full CLIP"][0])
    imgs = rand_images(8, seed=9)
    cos = similarity(clip, imgs)["result"][0]
    kept, scores = select(clip, imgs, top_k=8, min_score=0.0, scale="clipscore_100")["result"]
    order = sorted(range(8), key=lambda i: -cos[i])
    assert torch.equal(kept, imgs[order]) and scores == pytest.approx([max(100 * cos[i], 0.0) for i in order])


def test_ranking_ties_keep_batch_order():
    """Images tied at a clamped 0 are ranked by their cosine; equal cosines keep batch order."""
    result = SimilarityResult([0.0, 5.0, 0.0, 5.0], [-0.2, 0.05, -0.1, 0.05], "clipscore_100", prepare_prompt("a cat"))
    assert ranking(result) == [1, 3, 2, 0]
    assert result.best_index == ranking(result)[0]


def test_select_keeps_the_input_images(scoring_host):
    """The kept images are the input images themselves (RGBA stays RGBA), not preprocessed pixels."""
    clip = load(*PAIRS["full CLIP"][0])
    rgba = rand_images(3, c=4, seed=2)
    kept, _ = select(clip, rgba, top_k=3, min_score=-1.0)["result"]
    assert kept.shape == rgba.shape and sorted(kept[:, 0, 0, 3].tolist()) == sorted(rgba[:, 0, 0, 3].tolist())


def test_refuses_native_clip_without_converting(scoring_host):
    def unused(*_a, **_k):
        raise AssertionError("the native CLIP must not be converted")

    native = types.SimpleNamespace(cond_stage_model=object(), patcher=object())
    scoring_host.from_native = unused
    for call in (lambda: similarity(native, rand_images(1)), lambda: select(native, rand_images(1))):
        with pytest.raises(ValueError, match="ComfyUI's own CLIP .* no vision tower") as e:
            call()
        assert "'Load CLIP (CLIP Suite)'" in str(e.value) and "model_2 = the clip_vision file" in str(e.value)


def test_refuses_model_without_vision(scoring_host, scoring_root):
    clip = load("text_encoders/clip_l.safetensors")
    with pytest.raises(ValueError, match="clip_l.safetensors has no vision tower.*set model_2 to the clip_vision"):
        similarity(clip, rand_images(1))
    with pytest.raises(TypeError, match="expected CLIP Suite's loader output"):
        similarity("not a model", rand_images(1))


def test_refuses_vision_without_projection(scoring_host):
    with pytest.raises(ValueError, match="clip_vision_noproj.*projection"):
        clip = load("text_encoders/clip_l.safetensors", "clip_vision/clip_vision_noproj.safetensors")
        similarity(clip, rand_images(1))


def test_refuses_empty_prompt(scoring_host, images):
    with pytest.raises(ValueError, match="no words to score"):
        similarity(load(*PAIRS["full CLIP"][0]), images, text="embedding:style, BREAK (  :1.2)")
