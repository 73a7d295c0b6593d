"""Full-size random-weight CLIP text encoders in real file layouts, built once into a cache folder.

Used by the ComfyUI integration tests and the benchmarks (never by the fast CI tests). The same random
weights are written as ComfyUI's standalone files (HF layout, what ``CLIPLoader``/``DualCLIPLoader`` read)
and inside SD1.5/SDXL checkpoints (``cond_stage_model.transformer.`` / ``conditioner.embedders.*``, CLIP-G
in OpenCLIP layout), so every path loads identical numbers. Weights are fp16, as checkpoints ship them.

Cache folder: ``$CLIP_SUITE_CACHE`` or ``~/.cache/clip_suite_test_models``. Files are written to a temporary
name and renamed, so concurrent builders never see half a file.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import save_file

CLIP_L_SHAPE = dict(width=768, layers=12, projection=768, seed=11)
CLIP_G_SHAPE = dict(width=1280, layers=32, projection=1280, seed=12)
CLIP_H_SHAPE = dict(width=1024, layers=24, projection=1024, seed=13)  # SD2.x's OpenCLIP ViT-H/14


def cache_dir() -> Path:
    d = Path(os.environ.get("CLIP_SUITE_CACHE", Path.home() / ".cache" / "clip_suite_test_models"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def random_text_tower_hf(width: int, layers: int, projection: int | None, seed: int) -> dict[str, torch.Tensor]:
    """HF-layout tensors (``text_model.*``, ``text_projection.weight``) with CLIP-like magnitudes, fp16."""
    g = torch.Generator().manual_seed(seed)

    def normal(*shape, std=0.02, mean=0.0):
        return (torch.randn(*shape, generator=g) * std + mean).half()

    sd = {
        "text_model.embeddings.token_embedding.weight": normal(49408, width),
        "text_model.embeddings.position_embedding.weight": normal(77, width, std=0.01),
        "text_model.final_layer_norm.weight": normal(width, std=0.1, mean=1.0),
        "text_model.final_layer_norm.bias": normal(width, std=0.1),
    }
    for i in range(layers):
        p = f"text_model.encoder.layers.{i}."
        for n in ("q", "k", "v", "out"):
            sd[f"{p}self_attn.{n}_proj.weight"] = normal(width, width, std=width**-0.5)
            sd[f"{p}self_attn.{n}_proj.bias"] = normal(width, std=0.02)
        for n in ("layer_norm1", "layer_norm2"):
            sd[f"{p}{n}.weight"] = normal(width, std=0.1, mean=1.0)
            sd[f"{p}{n}.bias"] = normal(width, std=0.1)
        sd[f"{p}mlp.fc1.weight"] = normal(4 * width, width, std=width**-0.5)
        sd[f"{p}mlp.fc1.bias"] = normal(4 * width, std=0.02)
        sd[f"{p}mlp.fc2.weight"] = normal(width, 4 * width, std=(4 * width) ** -0.5)
        sd[f"{p}mlp.fc2.bias"] = normal(width, std=0.02)
    if projection:
        sd["text_projection.weight"] = normal(projection, width, std=width**-0.5)
    return sd


_BLOCK_NAMES = (("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"), ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj"),
                ("self_attn.out_proj", "attn.out_proj"))


def openclip_blocks(sd: dict[str, torch.Tensor], hf_layers: str, layers: int) -> dict[str, torch.Tensor]:
    """The pre-LN blocks ``<hf_layers>N.*`` of an HF state dict in OpenCLIP names (``transformer.resblocks.N.``,
    q/k/v stacked by rows into ``attn.in_proj_weight``/``in_proj_bias``); text and vision towers alike."""
    out = {}
    for i in range(layers):
        hf, oc = f"{hf_layers}{i}.", f"transformer.resblocks.{i}."
        for a, b in _BLOCK_NAMES:
            for s in ("weight", "bias"):
                out[f"{oc}{b}.{s}"] = sd[f"{hf}{a}.{s}"]
        for s, o in (("weight", "in_proj_weight"), ("bias", "in_proj_bias")):
            out[f"{oc}attn.{o}"] = torch.cat([sd[f"{hf}self_attn.{n}_proj.{s}"] for n in "qkv"]).contiguous()
    return out


def hf_to_openclip(sd: dict[str, torch.Tensor], layers: int) -> dict[str, torch.Tensor]:
    """The same tower in OpenCLIP names: fused ``in_proj``, ``text_projection`` used as x @ P."""
    out = {
        "token_embedding.weight": sd["text_model.embeddings.token_embedding.weight"],
        "positional_embedding": sd["text_model.embeddings.position_embedding.weight"],
        "ln_final.weight": sd["text_model.final_layer_norm.weight"],
        "ln_final.bias": sd["text_model.final_layer_norm.bias"],
    }
    if "text_projection.weight" in sd:
        out["text_projection"] = sd["text_projection.weight"].t().contiguous()
    out.update(openclip_blocks(sd, "text_model.encoder.layers.", layers))
    return out


def _write(path: Path, tensors: dict) -> Path:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file(tensors, str(tmp))
    os.replace(tmp, path)
    return path


def build(name: str) -> Path:
    """Path of a cached full-size file, building it first if needed.

    Names: ``clip_l.safetensors``, ``clip_g.safetensors`` (standalone, HF layout with projection),
    ``sd15_te.safetensors`` (SD1.5 checkpoint, text encoder only), ``sdxl_te.safetensors`` (SDXL base
    checkpoint, both text encoders only), ``clip_h.safetensors`` (SD2.x's OpenCLIP ViT-H, standalone HF
    layout), ``sd2_te.safetensors`` (SD2.x checkpoint, ``cond_stage_model.model.`` OpenCLIP layout) and
    ``sdxl_refiner_te.safetensors`` (SDXL refiner checkpoint: ``clip_g``'s weights under
    ``conditioner.embedders.0.model.``).
    """
    path = cache_dir() / name
    if path.exists():
        return path
    if name == "clip_l.safetensors":
        return _write(path, random_text_tower_hf(**CLIP_L_SHAPE))
    if name == "clip_g.safetensors":
        return _write(path, random_text_tower_hf(**CLIP_G_SHAPE))
    if name == "sd15_te.safetensors":
        l_sd = random_text_tower_hf(**CLIP_L_SHAPE)
        return _write(path, {"cond_stage_model.transformer." + k: v for k, v in l_sd.items() if "projection" not in k})
    if name == "sdxl_te.safetensors":
        l_sd = random_text_tower_hf(**CLIP_L_SHAPE)
        g_sd = random_text_tower_hf(**CLIP_G_SHAPE)
        tensors = {"conditioner.embedders.0.transformer." + k: v for k, v in l_sd.items() if "projection" not in k}
        tensors.update({"conditioner.embedders.1.model." + k: v for k, v in hf_to_openclip(g_sd, 32).items()})
        return _write(path, tensors)
    if name == "clip_h.safetensors":
        return _write(path, random_text_tower_hf(**CLIP_H_SHAPE))
    if name == "sd2_te.safetensors":
        h_sd = random_text_tower_hf(**CLIP_H_SHAPE)
        return _write(path, {"cond_stage_model.model." + k: v for k, v in hf_to_openclip(h_sd, 24).items()})
    if name == "sdxl_refiner_te.safetensors":
        g_sd = random_text_tower_hf(**CLIP_G_SHAPE)
        return _write(path, {"conditioner.embedders.0.model." + k: v for k, v in hf_to_openclip(g_sd, 32).items()})
    raise ValueError(f"unknown full-size test model {name!r}")
