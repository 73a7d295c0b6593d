"""Tower configs are built by keyword only, frozen, documented field by field, and the presets keep their
shapes."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from clip_suite.clip_impl.tokenizer import EOS_ID, VOCAB_SIZE
from clip_suite.clip_impl.towers import (
    CLIP_L, OPENCLIP_BIGG, OPENCLIP_H, VISION_PRESETS, VIT_BIGG_14, VIT_H_14, VIT_L_14, VIT_L_14_336,
    TextTowerConfig, VisionTowerConfig,
)
from clip_suite.clip_impl.towers.vision import VIT_B_16, VIT_B_32

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("cfg", [CLIP_L, VIT_L_14])
def test_positional_construction_is_refused(cfg):
    with pytest.raises(TypeError):
        type(cfg)(*dataclasses.astuple(cfg))


def test_every_construction_in_the_repo_is_by_keyword():
    """Presets and configs built anywhere (library, nodes, CLI, tests, benchmarks) name every field."""
    bad = []
    for folder in ("clip_impl", "nodes", "cli", "tests", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for node in ast.walk(tree):
                if not isinstance(node, ast.Call):
                    continue
                name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
                if name in ("TextTowerConfig", "VisionTowerConfig") and node.args:
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name} with positional arguments")
    assert not bad, bad


@pytest.mark.parametrize("cfg", [CLIP_L, VIT_L_14])
def test_frozen_and_replace_keeps_working(cfg):
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.width = 1  # type: ignore[misc]
    changed = dataclasses.replace(cfg, layers=2, projection_dim=None)
    assert (changed.layers, changed.projection_dim, changed.width) == (2, None, cfg.width)
    assert cfg.with_shape(layers=2, projection_dim=None) == changed
    assert type(cfg)(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}) == cfg


@pytest.mark.parametrize("cls", [TextTowerConfig, VisionTowerConfig])
def test_every_field_is_documented(cls):
    doc = cls.__doc__
    assert "Args:" in doc
    for f in dataclasses.fields(cls):
        assert f"        {f.name} (`" in doc, f"{cls.__name__}.{f.name} is not in the docstring"


def test_text_presets():
    shapes = {
        cfg.name: (cfg.width, cfg.layers, cfg.heads, cfg.mlp_width, cfg.activation, cfg.projection_dim, cfg.pad_id)
        for cfg in (CLIP_L, OPENCLIP_H, OPENCLIP_BIGG)
    }
    assert shapes == {
        "clip_l": (768, 12, 12, 3072, "quick_gelu", 768, EOS_ID),
        "clip_h": (1024, 24, 16, 4096, "gelu", 1024, 0),
        "clip_g": (1280, 32, 20, 5120, "gelu", 1280, 0),
    }
    assert all(cfg.vocab_size == VOCAB_SIZE and cfg.positions == 77 for cfg in (CLIP_L, OPENCLIP_H, OPENCLIP_BIGG))


def test_vision_presets():
    assert VISION_PRESETS == (VIT_B_32, VIT_B_16, VIT_L_14, VIT_L_14_336, VIT_H_14, VIT_BIGG_14)
    shapes = {
        cfg.name: (cfg.width, cfg.layers, cfg.heads, cfg.mlp_width, cfg.patch, cfg.image_size, cfg.activation,
                   cfg.projection_dim)
        for cfg in VISION_PRESETS
    }
    assert shapes == {
        "ViT-B/32": (768, 12, 12, 3072, 32, 224, "quick_gelu", 512),
        "ViT-B/16": (768, 12, 12, 3072, 16, 224, "quick_gelu", 512),
        "ViT-L/14": (1024, 24, 16, 4096, 14, 224, "quick_gelu", 768),
        "ViT-L/14-336": (1024, 24, 16, 4096, 14, 336, "quick_gelu", 768),
        "ViT-H/14": (1280, 32, 16, 5120, 14, 224, "gelu", 1024),
        "ViT-bigG/14": (1664, 48, 16, 8192, 14, 224, "gelu", 1280),
    }
    assert (VIT_L_14_336.grid, VIT_L_14_336.positions) == (24, 24 * 24 + 1)
