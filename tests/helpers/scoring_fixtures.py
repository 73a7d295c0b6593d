"""Fixtures and helpers for the scoring-node tests: a ComfyUI-style models folder with tiny CLIPs (text
encoders, clip_vision files, full CLIPs) served by the standalone host, and short calls of the nodes."""

from __future__ import annotations

import os

import pytest
import torch

from clip_suite.nodes import NODE_CLASS_MAPPINGS as NODES
from .shared_helpers import pinned_host

PROMPT = "a photo of a red fox sitting in the snow, golden hour"
# loader choices -> files in vision_dir
PAIRS = {
    "text + clip_vision": (("text_encoders/clip_l.safetensors", "clip_vision/clip_vision_l.safetensors"),
                           ("clip_l.safetensors", "clip_vision_l.safetensors")),
    "full CLIP": (("checkpoints/clip_hf.safetensors", "none"), ("clip_hf.safetensors",)),
    "SDXL + bigG": (("checkpoints/sdxl.safetensors", "clip_vision/clip_vision_g.safetensors"),
                    ("sdxl.safetensors", "clip_vision_g.safetensors")),
}


@pytest.fixture(scope="module")
def scoring_root(tmp_path_factory, vision_dir):
    """A ComfyUI-style models folder with text encoders, clip_vision files and full CLIPs."""
    root = tmp_path_factory.mktemp("scoring_models")
    layout = {
        "checkpoints": ["clip_hf.safetensors", "sdxl.safetensors", "sd15.safetensors"],
        "text_encoders": ["clip_l.safetensors", "clip_g.safetensors"],
        "clip_vision": ["clip_vision_l.safetensors", "clip_vision_g.safetensors", "clip_vision_noproj.safetensors"],
    }
    for folder, names in layout.items():
        (root / folder).mkdir()
        for name in names:
            os.symlink(vision_dir / name, root / folder / name)
    return root


@pytest.fixture()
def scoring_host(scoring_root):
    with pinned_host(scoring_root) as pinned:
        yield pinned


def load(model, model_2="none"):
    return NODES["ClipSuiteLoader"]().load(model, model_2, "auto", "auto", "cpu")["result"][0]


def similarity(clip, images, text=PROMPT, scale="cosine"):
    return NODES["ClipSuiteImageTextSimilarity"]().score(clip, images, text, scale)


def select(clip, images, top_k=1, min_score=0.0, scale="cosine", text=PROMPT):
    return NODES["ClipSuiteSelectBest"]().select(clip, images, text, top_k, min_score, scale)


def rand_images(n, h=40, w=36, seed=0, c=3):
    return torch.rand(n, h, w, c, generator=torch.Generator().manual_seed(seed))
