"""Aesthetic Score node, Keep Best ranking by an aesthetic head, and the logit scale on the nodes, through the
standalone host on tiny CLIPs (heads from the ``aesthetic`` model folder)."""

import os

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

from clip_suite.clip_impl.images.preprocess import preprocess_images
from clip_suite.nodes import NODE_CLASS_MAPPINGS as NODES
from clip_suite.nodes import host
from helpers.scoring_fixtures import PAIRS, PROMPT, load, rand_images, select, similarity
from helpers.vision_fixtures import v336_model, v_model, vg_model, vh_model, vision_dir  # noqa: F401

WIDTH = 64  # the tiny v_model's embedding width (its visual_projection)


def _mlp(width, seed):
    torch.manual_seed(seed)
    layers = nn.Sequential(nn.Linear(width, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
                           nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1)).eval()
    return layers, {f"layers.{k}": v for k, v in layers.state_dict().items()}


@pytest.fixture(scope="module")
def heads():
    torch.manual_seed(4)
    v1 = nn.Linear(WIDTH, 1).eval()
    v2, v2_sd = _mlp(WIDTH, 5)
    wide = nn.Linear(768, 1)
    return {"v1": (v1, v1.state_dict()), "v2": (v2, v2_sd), "wide": (wide, wide.state_dict())}


@pytest.fixture()
def aesthetic_host(tmp_path, vision_dir, heads):  # noqa: F811
    root = tmp_path / "models"
    (root / "checkpoints").mkdir(parents=True)
    (root / "text_encoders").mkdir()
    (root / "clip_vision").mkdir()
    os.symlink(vision_dir / "clip_hf.safetensors", root / "checkpoints" / "clip_hf.safetensors")
    os.symlink(vision_dir / "clip_l.safetensors", root / "text_encoders" / "clip_l.safetensors")
    os.symlink(vision_dir / "clip_vision_l.safetensors", root / "clip_vision" / "clip_vision_l.safetensors")
    folder = root / "aesthetic" / "laion"
    folder.mkdir(parents=True)
    torch.save(heads["v1"][1], folder / "sa_0_4_tiny_linear.pth")
    save_file({k: v.contiguous() for k, v in heads["v2"][1].items()}, root / "aesthetic" / "improved_tiny.safetensors")
    torch.save(heads["wide"][1], root / "aesthetic" / "sa_0_4_vit_l_14_linear.pth")
    (root / "aesthetic" / "readme.txt").write_text("not a head")
    previous = host.set_host(host.StandaloneHost(root))
    yield host.get_host()
    host.set_host(previous)


def _reference(head_module, v_model, images):  # noqa: F811
    with torch.no_grad():
        embeds = v_model(pixel_values=preprocess_images(images, v_model.config.image_size)).image_embeds
        return head_module(F.normalize(embeds, dim=-1))[:, 0]


def test_head_choices_from_the_aesthetic_folder(aesthetic_host):
    assert host.aesthetic_heads() == ["improved_tiny.safetensors", "laion/sa_0_4_tiny_linear.pth", "sa_0_4_vit_l_14_linear.pth"]
    spec = NODES["ClipSuiteAestheticScore"].INPUT_TYPES()["required"]["head"][0]
    assert spec == host.aesthetic_heads()
    assert NODES["ClipSuiteSelectBest"].INPUT_TYPES()["optional"]["aesthetic_head"][0] == ["none", *spec]
    for bad in ("../checkpoints/clip_hf.safetensors", "/etc/passwd"):
        with pytest.raises(ValueError, match="pick a file from the list"):
            host.aesthetic_head_path(bad)
    with pytest.raises(ValueError, match="not in the aesthetic folders"):
        host.aesthetic_head_path("missing.pth")


@pytest.mark.parametrize("pair", ["full CLIP", "text + clip_vision"])
@pytest.mark.parametrize("which,name", [("v1", "laion/sa_0_4_tiny_linear.pth"), ("v2", "improved_tiny.safetensors")])
def test_aesthetic_node_equals_the_reference(aesthetic_host, heads, v_model, pair, which, name):  # noqa: F811
    images = rand_images(5, seed=9)
    out = NODES["ClipSuiteAestheticScore"]().score(load(*PAIRS[pair][0]), images, name)
    scores, mean, best, report = out["result"]
    want = _reference(heads[which][0], v_model, images)
    assert len(scores) == 5 and all(type(s) is float for s in scores)
    assert max(abs(a - b) for a, b in zip(scores, want.tolist())) <= 1e-5
    assert best == int(want.argmax()) and mean == pytest.approx(float(want.mean()), abs=1e-5)
    assert out["ui"] == {"text": [report], "scores": scores}
    assert ("v1 linear" if which == "v1" else "v2 MLP") in report and "#4:" in report


def test_a_head_of_another_width_is_refused(aesthetic_host):
    with pytest.raises(ValueError) as e:
        NODES["ClipSuiteAestheticScore"]().score(load(*PAIRS["full CLIP"][0]), rand_images(1), "sa_0_4_vit_l_14_linear.pth")
    assert "768-wide" in str(e.value) and f"{WIDTH}-wide" in str(e.value) and "clip_hf.safetensors" in str(e.value)


def test_keep_best_ranks_by_the_aesthetic_head(aesthetic_host, heads, v_model):  # noqa: F811
    images = rand_images(6, seed=11)
    want = _reference(heads["v2"][0], v_model, images)
    order = sorted(range(6), key=lambda i: -float(want[i]))
    clip = load(*PAIRS["full CLIP"][0])
    threshold = (float(want[order[2]]) + float(want[order[3]])) / 2  # keeps exactly the best three
    assert float(want[order[2]]) - float(want[order[3]]) > 2e-5, "scores too close for this check"
    out = NODES["ClipSuiteSelectBest"]().select(clip, images, "ignored", 5, threshold, "cosine", "improved_tiny.safetensors")
    kept, scores = out["result"]
    assert torch.equal(kept, images[order[:3]])
    assert scores == pytest.approx([float(want[i]) for i in order[:3]], abs=1e-5)
    assert "aesthetic score; text and scale unused" in out["ui"]["text"][0]
    # Without the optional input (a workflow saved before it existed) Keep Best ranks by the CLIP score.
    by_clip = select(clip, images, top_k=6, min_score=-1.0)
    assert by_clip["result"][1] == sorted(similarity(clip, images)["result"][0], reverse=True)


def test_logit_scale_on_the_nodes(aesthetic_host):
    clip = load(*PAIRS["full CLIP"][0])
    images = rand_images(4, seed=2)
    out = similarity(clip, images, scale="logit")
    scores, _, best, report = out["result"]
    cosines = similarity(clip, images, scale="cosine")["result"][0]
    factor = float(torch.tensor(4.6052).half().float().exp())  # the tiny full CLIP's logit_scale (stored fp16)
    assert scores == pytest.approx([factor * c for c in cosines], rel=1e-5)
    probs = torch.softmax(torch.tensor(scores, dtype=torch.float64), 0)
    for i, p in enumerate(probs.tolist()):
        assert f"#{i}: {scores[i]:.4f} (cosine {cosines[i]:+.4f}, softmax {p:.4f})" in report
    kept = select(clip, images, top_k=2, min_score=0.0, scale="logit", text=PROMPT)["result"][1]
    assert kept == sorted(scores, reverse=True)[:2] or all(s < 0 for s in sorted(scores, reverse=True)[:2])
    assert best == max(range(4), key=scores.__getitem__)


def test_web_extension_shows_scores_on_every_scoring_node():
    """The panel under a node shows ui["scores"]; web/clip_suite_helpers.js lists the nodes that send them."""
    import re
    from pathlib import Path

    js = (Path(__file__).resolve().parents[2] / "web" / "clip_suite_helpers.js").read_text()
    listed = set(re.findall(r'"(\w+)"', re.search(r"SCORE_NODES = \[(.*?)\]", js).group(1)))
    scoring = {name for name, cls in NODES.items() if "scores" in getattr(cls, "RETURN_NAMES", ())}
    assert listed == scoring == {"ClipSuiteImageTextSimilarity", "ClipSuiteSelectBest", "ClipSuiteAestheticScore"}
