"""The scoring nodes with bad or unusual IMAGE inputs, a broken model, and 8 threads at once (DESIGN 12,
issue 7): a clear error or correct scores, never a silent NaN score."""

import copy
import math
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from clip_suite.clip_impl.scoring.similarity import TEXT_CACHE, score_images
from helpers.scoring_fixtures import (  # noqa: F401  (fixtures)
    PAIRS, PROMPT, load, rand_images, scoring_host, scoring_root, select, similarity,
)
from helpers.vision_fixtures import v336_model, v_model, vg_model, vh_model, vision_dir  # noqa: F401


@pytest.fixture()
def clip(scoring_host):
    return load(*PAIRS["full CLIP"][0])


def scores(clip, images, scale="cosine", text=PROMPT):
    out = similarity(clip, images, text=text, scale=scale)
    assert out["ui"]["scores"] == out["result"][0]
    return out["result"][0]


@pytest.mark.parametrize(
    "images,message",
    [
        (torch.rand(40, 36, 3), r"\[B, H, W, C\], got shape \(40, 36, 3\) \(3 dimensions\); a single image needs a"),
        (torch.rand(1, 2, 40, 36, 3), r"got shape \(1, 2, 40, 36, 3\) \(5 dimensions\)"),
        (torch.rand(2, 40, 36, 2), r"2 channels; expected 3 \(RGB\), 4 \(RGBA"),
        (torch.rand(2, 3, 40, 36), r"36 channels"),  # channels first, as torchvision would have it
        (torch.rand(0, 40, 36, 3), r"the batch is empty \(shape \(0, 40, 36, 3\)\)"),
        (torch.rand(2, 0, 36, 3), r"the batch is empty"),
        (torch.rand(1, 40, 36, 3) * 255, r"values range .*\.\.2\d\d; a ComfyUI IMAGE holds 0\.\.1 \(scale 0\.\.255"),
        (torch.rand(1, 40, 36, 3) * 2 - 1, r"values range -\d.*-1\.\.1 tensors by \(x \+ 1\) / 2"),
        ((torch.rand(1, 40, 36, 3) * 255).to(torch.uint8), r"expected float values 0\.\.1 .*torch\.uint8"),
        (np.zeros((1, 40, 36, 3), dtype=np.float32), r"expected a torch tensor \[B, H, W, C\], got ndarray"),
    ],
    ids=["rank3", "rank5", "2ch", "channels_first", "empty_batch", "zero_height", "0..255", "-1..1", "uint8", "numpy"],
)
def test_bad_images_are_clear_errors(clip, images, message):
    with pytest.raises(ValueError, match="images: .*" + message):
        similarity(clip, images)
    with pytest.raises(ValueError, match="images: .*" + message):
        select(clip, images)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nan_or_inf_is_an_error_naming_the_images(clip, bad):
    images = rand_images(64, 16, 16)
    images[5, 3, 4, 1] = bad
    images[63, 0, 0, 0] = bad
    with pytest.raises(ValueError, match=r"images: images 5, 63 hold NaN or infinite values"):
        similarity(clip, images)


def test_grey_and_rgba_score_as_rgb(clip):
    rgb = rand_images(3, seed=4)
    grey = rgb[..., :1]
    rgba = torch.cat([rgb, torch.rand(3, 40, 36, 1)], dim=-1)
    assert scores(clip, rgba) == scores(clip, rgb)  # alpha dropped
    assert scores(clip, grey) == scores(clip, grey.expand(-1, -1, -1, 3).contiguous())


def test_half_precision_images_score_as_float(clip):
    half = rand_images(2, seed=6).half()
    assert scores(clip, half) == scores(clip, half.float())


def test_slightly_out_of_range_is_clipped(clip):
    """Resampling overshoot (a little outside 0..1) is clipped, not refused: 32 px images need no resize
    for this model, so the clipped batch must score exactly the same."""
    images = rand_images(3, 32, 32, seed=7) * 1.2 - 0.1  # -0.1 .. 1.1
    assert images.min() < 0 and images.max() > 1
    assert scores(clip, images) == scores(clip, images.clamp(0, 1))


def test_batch_of_64(clip, vision_dir):
    from clip_suite.clip_impl.weights.loading import load_clip

    images = rand_images(64, 48, 40, seed=8)
    got = scores(clip, images)
    assert len(got) == 64 and all(math.isfinite(s) for s in got)
    want = score_images(load_clip(vision_dir / "clip_hf.safetensors"), images, PROMPT, "cosine", cache=None)
    assert got == want.scores
    for i in (0, 7, 8, 31, 63):  # across the internal batches of 8
        assert got[i] == pytest.approx(scores(clip, images[i : i + 1])[0], abs=1e-6)
    kept, kept_scores = select(clip, images, top_k=64, min_score=-1.0)["result"]
    assert kept.shape == images.shape and kept_scores == sorted(got, reverse=True)


def test_model_giving_nan_scores_is_an_error(clip):
    broken = copy.deepcopy(clip)
    with torch.no_grad():
        broken.model.vision.visual_projection.weight[0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"NaN or infinite score for images 0, 1 of 2; .*precision fp32"):
        similarity(broken, rand_images(2))
    with pytest.raises(ValueError, match=r"NaN or infinite score"):
        select(broken, rand_images(2), min_score=-1.0)


def test_eight_threads_match_serial_calls(clip):
    """8 threads at once on one shared model (text cache cold, so they also race on cache misses)."""
    batches = [rand_images(3, 40 + 4 * i, 36, seed=20 + i) for i in range(4)]
    prompts = [PROMPT, "a cat", "an oil painting of a lighthouse", "a cat"]
    jobs = [(i % 2, batches[i % 4], prompts[(i // 2) % 4]) for i in range(8)]  # 4 similarity, 4 select calls

    def call(job):
        kind, images, text = job
        if kind == 0:
            out = similarity(clip, images, text=text)["result"]
            return out[0], out[1], out[2]
        kept, kept_scores = select(clip, images, top_k=2, min_score=-1.0, text=text)["result"]
        return kept_scores, kept

    TEXT_CACHE.clear()
    serial = [call(job) for job in jobs]
    for _round in range(3):
        TEXT_CACHE.clear()
        barrier = threading.Barrier(len(jobs))

        def at_once(job):
            barrier.wait()
            return call(job)

        with ThreadPoolExecutor(len(jobs)) as pool:
            threaded = list(pool.map(at_once, jobs))
        for (kind, _images, _text), a, b in zip(jobs, serial, threaded):
            # Equal up to float rounding: the math library may split work differently under load.
            assert a[0] == pytest.approx(b[0], abs=1e-6) and all(math.isfinite(s) for s in b[0])
            if kind == 0:
                assert a[1] == pytest.approx(b[1], abs=1e-6) and a[2] == b[2]
            else:
                assert torch.equal(a[1], b[1])
