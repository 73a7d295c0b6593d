"""NaN and infinite scores on the nodes (issue 26, point 15): Keep Best never keeps such an image and says so,
refuses a min_score that is not finite (a linked value is not range-checked); the similarity and aesthetic
nodes name the images and say why (the model's embedding, or the head) instead of passing NaN on."""

from __future__ import annotations

import copy
import math
import os

import pytest
import torch

from clip_suite.clip_impl.scoring import AestheticHead
from clip_suite.nodes import NODE_CLASS_MAPPINGS as NODES
from clip_suite.nodes import aesthetic_heads, host
from helpers.scoring_fixtures import PAIRS, load, rand_images, select, similarity
from helpers.vision_fixtures import v336_model, v_model, vg_model, vh_model, vision_dir  # noqa: F401

WIDTH = 64  # the tiny full CLIP's embedding width


@pytest.fixture()
def head_host(tmp_path, vision_dir):  # noqa: F811
    root = tmp_path / "models"
    (root / "checkpoints").mkdir(parents=True)
    os.symlink(vision_dir / "clip_hf.safetensors", root / "checkpoints" / "clip_hf.safetensors")
    (root / "aesthetic").mkdir()
    # Finite weights (3e38 < float32's 3.4e38) whose products overflow on any embedding: NaN scores.
    torch.save({"layers.0.weight": torch.eye(WIDTH) * 3e38, "layers.0.bias": torch.zeros(WIDTH),
                "layers.2.weight": torch.full((1, WIDTH), 1e30), "layers.2.bias": torch.zeros(1)},
               root / "aesthetic" / "overflow.pth")
    torch.manual_seed(2)
    torch.save(torch.nn.Linear(WIDTH, 1).state_dict(), root / "aesthetic" / "fine.pth")
    previous = host.set_host(host.StandaloneHost(root))
    yield host.get_host()
    host.set_host(previous)


class _NanAt(AestheticHead):
    """A head whose score for the images at ``bad`` is NaN (as an overflow on those embeddings would give)."""

    bad = (1,)

    def __call__(self, embeds):
        out = super().__call__(embeds).clone()
        out[list(self.bad)] = math.nan
        return out


def _keep_best(clip, images, min_score=-100.0, top_k=5, head="fine.pth"):
    return NODES["ClipSuiteSelectBest"]().select(clip, images, "ignored", top_k, min_score, "cosine", head)


def test_keep_best_never_keeps_a_nan_scored_image_and_says_so(head_host, monkeypatch):
    fine = aesthetic_heads.head_for("fine.pth")
    nan_head = _NanAt(fine.kind, fine.weights, fine.biases, "partly_nan.pth")
    monkeypatch.setattr(aesthetic_heads, "head_for", lambda name: nan_head)
    images = rand_images(3, seed=5)
    out = _keep_best(load(*PAIRS["full CLIP"][0]), images)
    kept, scores = out["result"]
    assert kept.shape[0] == 2 and all(math.isfinite(s) for s in scores)  # before: an error for the whole batch
    assert not any(torch.equal(k, images[1]) for k in kept)
    report = out["ui"]["text"][0]
    assert "never kept: image #1, whose score is not finite" in report
    assert "#1: aesthetic score is not finite (nan): the aesthetic head partly_nan.pth overflowed float32" in report
    assert out["ui"]["scores"] == scores


def test_keep_best_with_no_finite_score_is_an_error_saying_why(head_host):
    with pytest.raises(ValueError, match=r"NaN or infinite aesthetic score for images 0, 1, 2 of 3; #0: aesthetic "
                                         r"score is not finite \(nan\): the aesthetic head overflow.pth overflowed"):
        _keep_best(load(*PAIRS["full CLIP"][0]), rand_images(3), head="overflow.pth")


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_keep_best_refuses_a_min_score_that_is_not_finite(head_host, value):
    with pytest.raises(ValueError, match=r"min_score is (nan|inf|-inf); give a finite number"):
        select(load(*PAIRS["full CLIP"][0]), rand_images(2), min_score=value)


def test_aesthetic_node_names_the_images_and_the_head(head_host):
    with pytest.raises(ValueError, match=r"images 0, 1 of 2; #0: aesthetic score is not finite \(nan\): the "
                                         r"aesthetic head overflow.pth overflowed float32"):
        NODES["ClipSuiteAestheticScore"]().score(load(*PAIRS["full CLIP"][0]), rand_images(2), "overflow.pth")


def test_similarity_node_says_the_image_embedding_is_not_finite(head_host):
    broken = copy.deepcopy(load(*PAIRS["full CLIP"][0]))
    with torch.no_grad():
        broken.model.vision.visual_projection.weight[0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"score for images 0, 1 of 2; #0: score is not finite \(nan\): the image "
                                         r"embedding holds NaN or infinite values .* precision fp32"):
        similarity(broken, rand_images(2))
