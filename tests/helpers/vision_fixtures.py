"""Fixtures for vision and scoring tests: tiny ViTs and the files that hold them (import what you use).

Projection sizes pair them with the text towers of ``conftest.py``: ``v_model`` (quick_gelu, projection 64)
with ``l_model``; ``vg_model`` (gelu, projection 96) with ``g_model``; ``vh_model`` (gelu, 64) with
``h_model``.
"""

from __future__ import annotations

import pytest

from . import tiny_models as tm


@pytest.fixture(scope="session")
def v_model():
    """ViT-L-like (quick_gelu), 128 wide, 3 layers, 8-pixel patches on 32 px, projection 64."""
    return tm.vision_model(tm.V_WIDTH, 3, 8, 32, projection=64, act="quick_gelu", seed=11)


@pytest.fixture(scope="session")
def v336_model():
    """The "336" variant: 48 px (37 positions), otherwise like ``v_model``."""
    return tm.vision_model(tm.V_WIDTH, 3, 8, 48, projection=64, act="quick_gelu", seed=12)


@pytest.fixture(scope="session")
def vg_model():
    """ViT-bigG-like (gelu), 192 wide, 2 layers, projection 96 (pairs with g_model)."""
    return tm.vision_model(192, 2, 8, 32, projection=96, act="gelu", seed=13)


@pytest.fixture(scope="session")
def vh_model():
    """ViT-H-like (gelu), 128 wide, 2 layers, projection 64 (pairs with h_model)."""
    return tm.vision_model(tm.V_WIDTH, 2, 8, 32, projection=64, act="gelu", seed=14)


@pytest.fixture(scope="session")
def vision_dir(tmp_path_factory, l_model, g_model, h_model, v_model, v336_model, vg_model, vh_model):
    """Full CLIPs and clip_vision files in every layout the loader reads, plus text encoders to pair."""
    d = tmp_path_factory.mktemp("vision")
    tm.write_hf_clip(d / "clip_hf.safetensors", l_model, v_model)
    tm.write_openclip_clip(d / "clip_openclip.safetensors", l_model, v_model)
    tm.write_hf_clip(d / "clip_hf_336.safetensors", l_model, v336_model)
    tm.write_hf_clip_folder(d / "clip_h_folder", h_model, vh_model)  # gelu, told by config.json only
    tm.write_clip_vision(d / "clip_vision_l.safetensors", v_model)
    tm.write_clip_vision(d / "clip_vision_l_openclip.safetensors", v_model, layout="openclip")
    tm.write_clip_vision(d / "clip_vision_g.safetensors", vg_model)
    tm.write_clip_vision(d / "clip_vision_noproj.safetensors", v_model, projection=False)
    tm.save(d / "clip_l.safetensors", tm.hf_state(l_model))
    tm.save(d / "clip_g.safetensors", tm.hf_state(g_model))
    tm.write_sd1_checkpoint(d / "sd15.safetensors", l_model)
    tm.write_sdxl_checkpoint(d / "sdxl.safetensors", l_model, g_model)
    unclip = {**tm.openclip_state(h_model, "cond_stage_model.model."), **tm.openclip_vision_state(vh_model, "embedder.model.visual.")}
    tm.save(d / "sd21_unclip.safetensors", unclip)
    return d
