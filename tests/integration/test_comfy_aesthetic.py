"""Issue 17 inside a real ComfyUI: the ``aesthetic`` model folder registered with folder_paths, the Aesthetic
Score node and Keep Best's ``aesthetic_head`` run by ComfyUI's executor, and the ``logit`` scale.

Same tiny models and images as ``test_comfy_scoring.py`` (a CLIP-L text encoder + its clip_vision file; a
4-frame PNG that LoadImage turns into a batch), plus LAION-layout heads on the tiny tower's 64-wide embedding.
"""

import pytest
import torch
import torch.nn as nn
from safetensors.torch import save_file

from clip_suite.clip_impl.scoring.aesthetic import aesthetic_scores, load_head
from clip_suite.clip_impl.weights.loading import load_clip
from test_comfy_scoring import FRAMES, PROMPT, list_output, loader, reference, scoring  # noqa: F401
from helpers.vision_fixtures import v_model  # noqa: F401

HEAD, MLP_HEAD = "sa_0_4_tiny_linear.pth", "tiny_improved.safetensors"


@pytest.fixture(scope="module")
def heads(comfy, scoring, tmp_path_factory):  # noqa: F811
    folder = tmp_path_factory.mktemp("aesthetic")
    torch.manual_seed(3)
    torch.save(nn.Linear(64, 1).state_dict(), folder / HEAD)
    mlp = nn.Sequential(nn.Linear(64, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
                        nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1))
    with torch.no_grad():
        mlp[7].bias.fill_(5.0)  # scores around 5, as real aesthetic scores (about 1..10)
    save_file({f"layers.{k}": v.contiguous() for k, v in mlp.state_dict().items()}, folder / MLP_HEAD)
    comfy.folder_paths.add_model_folder_path("aesthetic", str(folder))
    return folder


def _want(scoring, folder, name):  # noqa: F811
    return aesthetic_scores(load_clip(scoring["files"], with_vision=True), load_head(folder / name), scoring["pixels"]).scores


def test_aesthetic_folder_is_registered_with_folder_paths(comfy, heads):
    paths, extensions = comfy.folder_paths.folder_names_and_paths["aesthetic"]
    assert any(p.endswith("models/aesthetic") for p in paths) and str(heads) in paths
    assert {".pth", ".pt", ".safetensors"} <= set(extensions)
    assert comfy.folder_paths.get_filename_list("aesthetic") == sorted([HEAD, MLP_HEAD])
    spec = comfy.nodes.NODE_CLASS_MAPPINGS["ClipSuiteAestheticScore"].INPUT_TYPES()["required"]["head"][0]
    assert spec == sorted([HEAD, MLP_HEAD])
    assert comfy.nodes.NODE_DISPLAY_NAME_MAPPINGS["ClipSuiteAestheticScore"] == "Aesthetic Score (CLIP)"


@pytest.mark.parametrize("name", [HEAD, MLP_HEAD])
def test_aesthetic_score_node(comfy, scoring, heads, name):  # noqa: F811
    graph = {"1": loader(), "2": {"class_type": "LoadImage", "inputs": {"image": "four_frames.png"}},
             "3": {"class_type": "ClipSuiteAestheticScore", "inputs": {"clip": ["1", 0], "images": ["2", 0], "head": name}}}
    comfy.run(graph)
    scores = list_output(comfy, "3")
    want = _want(scoring, heads, name)
    assert len(scores) == FRAMES and scores == pytest.approx(want, abs=1e-5)
    assert comfy.ui("3")["scores"] == scores and comfy.output("3", 2) == max(range(FRAMES), key=want.__getitem__)


def test_keep_best_by_aesthetic_head_feeds_save_image(comfy, scoring, heads):  # noqa: F811
    inputs = {"clip": ["1", 0], "images": ["2", 0], "text": PROMPT, "top_k": 2, "min_score": 1.0,
              "scale": "cosine", "aesthetic_head": MLP_HEAD}
    graph = {"1": loader(), "2": {"class_type": "LoadImage", "inputs": {"image": "four_frames.png"}},
             "3": {"class_type": "ClipSuiteSelectBest", "inputs": inputs},
             "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "aesthetic"}}}
    comfy.run(graph)
    want = _want(scoring, heads, MLP_HEAD)
    order = sorted(range(FRAMES), key=lambda i: -want[i])
    assert min(want) > 1.0, "every image passes min_score 1"
    assert torch.equal(comfy.output("3"), scoring["pixels"][order[:2]])
    assert list_output(comfy, "3", 1) == pytest.approx([want[i] for i in order[:2]], abs=1e-5)
    assert len(comfy.ui("4")["images"]) == 2


def test_logit_scale_on_a_pair_uses_100(comfy, scoring):  # noqa: F811
    graph = {"1": loader(), "2": {"class_type": "LoadImage", "inputs": {"image": "four_frames.png"}},
             "3": {"class_type": "ClipSuiteImageTextSimilarity",
                   "inputs": {"clip": ["1", 0], "images": ["2", 0], "text": PROMPT, "scale": "logit"}}}
    comfy.run(graph)
    cosines = reference(scoring).scores
    assert list_output(comfy, "3") == pytest.approx([100 * c for c in cosines], abs=1e-4)
    report = comfy.output("3", 3)
    assert "softmax" in report and "holds no logit_scale: 100 is used" in report
