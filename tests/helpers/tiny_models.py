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

from .full_size import openclip_blocks

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
    out.update(openclip_blocks(sd, "text_model.encoder.layers.", model.config.num_hidden_layers))
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


# ------------------------------------------------------------------------------------------- vision towers
# Tiny ViTs from transformers' CLIPVisionModelWithProjection (the independent reference): 64-wide heads as
# the loader assumes for widths of no known CLIP, 8-pixel patches on 32x32 (or 48x48, the "336" variant).
V_WIDTH = 128


def vision_model(width=V_WIDTH, layers=3, patch=8, image_size=32, projection=64, act="quick_gelu", seed=10):
    """A random HF vision tower; weights rounded to fp16 as in ``text_model``."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    cfg = CLIPVisionConfig(
        hidden_size=width,
        intermediate_size=4 * width,
        num_hidden_layers=layers,
        num_attention_heads=width // 64,
        image_size=image_size,
        patch_size=patch,
        hidden_act=act,
        projection_dim=projection,
    )
    model = CLIPVisionModelWithProjection(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
            p.copy_(p.half().float())
    return model


def hf_vision_state(vmodel, prefix="", projection=True, position_ids=False) -> dict:
    """HF layout (CLIPVisionModelWithProjection, ComfyUI clip_vision files, CLIPModel's vision half).

    ``position_ids``: add the int64 buffer older transformers versions saved (real files carry it)."""
    sd = {prefix + k: v.detach().clone().contiguous() for k, v in vmodel.state_dict().items()}
    if not projection:
        sd = {k: v for k, v in sd.items() if "visual_projection" not in k}
    if position_ids:
        n = vmodel.config.image_size // vmodel.config.patch_size
        sd[prefix + "vision_model.embeddings.position_ids"] = torch.arange(n * n + 1)[None]
    return sd


def openclip_vision_state(vmodel, prefix="visual.", projection=True) -> dict:
    """The same vision tower in OpenCLIP names (conv1, ln_pre/ln_post, fused in_proj, x @ proj)."""
    sd = vmodel.state_dict()
    v = "vision_model."
    out = {
        "class_embedding": sd[v + "embeddings.class_embedding"],
        "conv1.weight": sd[v + "embeddings.patch_embedding.weight"],
        "positional_embedding": sd[v + "embeddings.position_embedding.weight"],
        "ln_pre.weight": sd[v + "pre_layrnorm.weight"],
        "ln_pre.bias": sd[v + "pre_layrnorm.bias"],
        "ln_post.weight": sd[v + "post_layernorm.weight"],
        "ln_post.bias": sd[v + "post_layernorm.bias"],
    }
    if projection:
        out["proj"] = sd["visual_projection.weight"].t()
    out.update(openclip_blocks(sd, f"{v}encoder.layers.", vmodel.config.num_hidden_layers))
    return {prefix + k: t.detach().clone().contiguous() for k, t in out.items()}


def write_hf_clip(path, tmodel, vmodel, logit_scale=4.6052) -> Path:
    """A full CLIP in transformers' CLIPModel layout (text + vision + logit_scale, old position_ids too)."""
    sd = {**hf_state(tmodel), **hf_vision_state(vmodel, position_ids=True)}
    sd["text_model.embeddings.position_ids"] = torch.arange(77)[None]
    sd["logit_scale"] = torch.tensor(logit_scale)
    return save(path, sd)


def write_hf_clip_folder(folder, tmodel, vmodel, logit_scale=4.6052) -> Path:
    """A Hugging Face CLIPModel folder: model.safetensors + config.json with nested text/vision configs
    (PickScore_v1 is such a folder)."""
    folder = Path(folder)
    write_hf_clip(folder / "model.safetensors", tmodel, vmodel, logit_scale)
    config = {
        "model_type": "clip",
        "text_config": tmodel.config.to_dict(),
        "vision_config": vmodel.config.to_dict(),
        "projection_dim": vmodel.config.projection_dim,
    }
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def write_openclip_clip(path, tmodel, vmodel, logit_scale=4.6052) -> Path:
    """A full CLIP in OpenCLIP/OpenAI checkpoint names (text at the top level, vision under visual.)."""
    sd = {**openclip_state(tmodel), **openclip_vision_state(vmodel)}
    sd["logit_scale"] = torch.tensor(logit_scale)
    return save(path, sd)


def write_hps_checkpoint(path, tmodel, vmodel, logit_scale=4.6052) -> Path:
    """An HPS v2 / v2.1 checkpoint: ``torch.save({"state_dict": ...})`` of an OpenCLIP CLIP in OpenCLIP key
    names (``HPS_v2_compressed.pt``; HPSv2's score.py loads ``checkpoint['state_dict']``)."""
    sd = {**openclip_state(tmodel), **openclip_vision_state(vmodel)}
    sd["logit_scale"] = torch.tensor(logit_scale)
    path = Path(path)
    torch.save({"state_dict": sd}, path)
    return path


def clip_model(tmodel, vmodel, logit_scale=4.6052):
    """transformers' CLIPModel holding the weights of ``tmodel`` + ``vmodel`` (the reference for scores)."""
    from transformers import CLIPConfig, CLIPModel

    cfg = CLIPConfig(
        text_config=tmodel.config.to_dict(), vision_config=vmodel.config.to_dict(),
        projection_dim=vmodel.config.projection_dim,
    )
    model = CLIPModel(cfg).eval()
    sd = {**hf_state(tmodel), **hf_vision_state(vmodel)}
    sd["logit_scale"] = torch.tensor(logit_scale)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not unexpected and all("position_ids" in k for k in missing), (missing, unexpected)
    return model


def write_clip_vision(path, vmodel, layout="hf", projection=True) -> Path:
    """A ComfyUI clip_vision file: HF vision layout + visual_projection (or OpenCLIP's visual.*)."""
    if layout == "hf":
        return save(path, hf_vision_state(vmodel, projection=projection))
    return save(path, openclip_vision_state(vmodel, projection=projection))
