"""Shared fixtures: tiny random towers and the files that hold them, in every real layout."""

from __future__ import annotations

import pytest

from helpers import tiny_models as tm  # tests/ is on sys.path: pytest puts a rootless conftest's folder there


@pytest.fixture(scope="session")
def l_model():
    """CLIP-L-like tower (quick_gelu), 128 wide, 4 layers."""
    return tm.text_model(tm.L_WIDTH, 4, "quick_gelu", projection=64, seed=1)


@pytest.fixture(scope="session")
def g_model():
    """bigG-like tower (gelu), 192 wide, 5 layers."""
    return tm.text_model(tm.G_WIDTH, 5, "gelu", projection=96, seed=2)


@pytest.fixture(scope="session")
def h_model():
    """ViT-H-like tower (gelu), 128 wide, 4 layers."""
    return tm.text_model(tm.H_WIDTH, 4, "gelu", projection=64, seed=3)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, l_model, g_model, h_model):
    """A folder with the tiny towers in every layout the loader reads."""
    d = tmp_path_factory.mktemp("models")
    tm.write_sd1_checkpoint(d / "sd15.safetensors", l_model)
    tm.write_sd1_checkpoint(d / "sd15_old.safetensors", l_model, bare=True)
    tm.write_sd2_checkpoint(d / "sd21.safetensors", h_model)
    tm.write_sdxl_checkpoint(d / "sdxl.safetensors", l_model, g_model)
    tm.write_refiner_checkpoint(d / "refiner.safetensors", g_model)
    tm.save(d / "clip_l.safetensors", tm.hf_state(l_model))
    tm.save(d / "clip_g.safetensors", tm.hf_state(g_model))
    tm.save(d / "clip_g_openclip.safetensors", tm.openclip_state(g_model))
    tm.write_diffusers(d / "diffusers_sdxl", l_model, g_model)
    return d
