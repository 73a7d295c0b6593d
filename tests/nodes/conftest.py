"""Node tests without ComfyUI: the nodes run through the standalone host on tiny random models laid out
in ComfyUI's ``models/`` folders (checkpoints/, text_encoders/, the legacy clip/, diffusers/)."""

from __future__ import annotations

import os
import shutil

import pytest

from helpers.shared_helpers import pinned_host


@pytest.fixture(scope="session")
def models_root(tmp_path_factory, model_dir):
    """A ComfyUI-style models folder holding the tiny models (symlinks where the files are whole)."""
    root = tmp_path_factory.mktemp("comfy_models")
    layout = {
        "checkpoints": ["sd15.safetensors", "sdxl.safetensors", "sd21.safetensors", "refiner.safetensors"],
        "text_encoders": ["clip_g.safetensors"],
        "clip": ["clip_l.safetensors"],  # ComfyUI's legacy name for text_encoders
    }
    for folder, names in layout.items():
        (root / folder).mkdir()
        for name in names:
            os.symlink(model_dir / name, root / folder / name)
    (root / "checkpoints" / "notes.txt").write_text("not a model")
    (root / "diffusers").mkdir()
    shutil.copytree(model_dir / "diffusers_sdxl", root / "diffusers" / "tiny_sdxl")
    return root


@pytest.fixture()
def standalone(models_root):
    """The standalone host over ``models_root``, pinned for the test (even if ComfyUI is importable)."""
    with pinned_host(models_root) as pinned:
        yield pinned
