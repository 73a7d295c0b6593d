"""Tiny random CLIP towers written in every real file layout, for loader and parity tests.

Towers come from transformers' ``CLIPTextModelWithProjection`` (the independent reference), with the
full 49408-token vocabulary and 77 positions but a small width and depth. Heads are 64 wide, as in every
real CLIP text tower, so the loaders infer the head count from the width.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModelWithProjection

L_WIDTH, G_WIDTH, H_WIDTH = 128, 192, 128


def text_model(width=L_WIDTH, layers=4, act="quick_gelu", projection=64, seed=0) -> CLIPTextModelWithProjection:
    """A random HF text tower; weights are rounded to fp16 so every precision mode sees the same values."""
    torch.manual_seed(seed)
    cfg = CLIPTextConfig(
        hidden_size=width,
        num_attention_heads=width // 64,
        intermediate_size=4 * width,
        num_hidden_layers=layers,
        vocab_size=49408,
        max_position_embeddings=77,
        hidden_act=act,
        projection_dim=projection,
        eos_token_id=49407,
        bos_token_id=49406,
        pad_token_id=49407,
    )
    model = CLIPTextModelWithProjection(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:  # HF initialises LayerNorms to 1/0; real towers are not that clean
                p.add_(0.1 * torch.randn_like(p))
            # fp16-exact values, so every precision mode starts from the same numbers.
            p.copy_(p.half().float())
    return model


def hf_state(model, prefix="", projection=True) -> dict:
    sd = {prefix + k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    if not projection:
        sd = {k: v for k, v in sd.items() if "text_projection" not in k}
    return sd


def openclip_state(model, prefix="", projection=True) -> dict:
    """The same tower in OpenCLIP names (fused in_proj, x @ text_projection)."""
    sd = model.state_dict()
    out = {
        "token_embedding.weight": sd["text_model.embeddings.token_embedding.weight"],
        "positional_embedding": sd["text_model.embeddings.position_embedding.weight"],
        "ln_final.weight": sd["text_model.final_layer_norm.weight"],
        "ln_final.bias": sd["text_model.final_layer_norm.bias"],
    }
    if projection:
        out["text_projection"] = sd["text_projection.weight"].t()
    for i in range(model.config.num_hidden_layers):
        hf = f"text_model.encoder.layers.{i}."
        oc = f"transformer.resblocks.{i}."
        for a, b in (("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"), ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj"), ("self_attn.out_proj", "attn.out_proj")):
            for s in ("weight", "bias"):
                out[f"{oc}{b}.{s}"] = sd[f"{hf}{a}.{s}"]
        for s, o in (("weight", "in_proj_weight"), ("bias", "in_proj_bias")):
            out[f"{oc}attn.{o}"] = torch.cat([sd[f"{hf}self_attn.{n}_proj.{s}"] for n in "qkv"])
    return {prefix + k: v.detach().clone().contiguous() for k, v in out.items()}


def _unet_and_vae(seed=1) -> dict:
    """A few keys of the parts a text loader must not read (to check it reads only what it needs)."""
    g = torch.Generator().manual_seed(seed)
    return {
        "model.diffusion_model.input_blocks.0.0.weight": torch.randn(32, 4, 3, 3, generator=g),
        "model.diffusion_model.out.2.bias": torch.randn(4, generator=g),
        "first_stage_model.decoder.conv_in.weight": torch.randn(8, 4, 3, 3, generator=g),
    }


def save(path: Path, tensors: dict, half=True) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: (v.half() if half and v.is_floating_point() else v) for k, v in tensors.items()}, str(path))
    return path


def write_sd1_checkpoint(path, l_model, bare=False) -> Path:
    prefix = "cond_stage_model.transformer." + ("" if bare else "")
    sd = hf_state(l_model, prefix, projection=False)
    if bare:
        sd = {k.replace("cond_stage_model.transformer.text_model.", "cond_stage_model.transformer."): v for k, v in sd.items()}
    return save(path, {**sd, **_unet_and_vae()})


def write_sd2_checkpoint(path, h_model) -> Path:
    return save(path, {**openclip_state(h_model, "cond_stage_model.model."), **_unet_and_vae()})


def write_sdxl_checkpoint(path, l_model, g_model) -> Path:
    sd = hf_state(l_model, "conditioner.embedders.0.transformer.", projection=False)
    sd.update(openclip_state(g_model, "conditioner.embedders.1.model."))
    return save(path, {**sd, **_unet_and_vae()})


def write_refiner_checkpoint(path, g_model) -> Path:
    return save(path, {**openclip_state(g_model, "conditioner.embedders.0.model."), **_unet_and_vae()})


def write_diffusers(folder, l_model, g_model=None) -> Path:
    folder = Path(folder)
    parts = [("text_encoder", l_model)] + ([("text_encoder_2", g_model)] if g_model is not None else [])
    for name, model in parts:
        save(folder / name / "model.safetensors", hf_state(model, projection=name == "text_encoder_2"))
        (folder / name / "config.json").write_text(json.dumps(model.config.to_dict()))
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionXLPipeline"}))
    return folder
