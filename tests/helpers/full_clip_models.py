"""Tiny random transformers ``CLIPModel``s (text + vision + logit_scale, the zero-shot reference) with the
structure of OpenAI's ViT-B/32 and ViT-L/14 (quick_gelu, 32- and 14-pixel patches, 64-wide heads) but small
widths, written as full CLIP files in HF and OpenCLIP layouts and as a text encoder + clip_vision pair."""

from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn.functional as F
from transformers import CLIPConfig, CLIPModel

from . import tiny_models as tm
from clip_suite.clip_impl.images.preprocess import preprocess_images
from clip_suite.clip_impl.tokenizer import BOS_ID, EOS_ID, get_tokenizer

# name: (text width, text layers, vision width, vision layers, patch, image size, projection)
SHAPES = {
    "ViT-B/32": (64, 2, 128, 2, 32, 96, 32),
    "ViT-L/14": (128, 2, 192, 2, 14, 56, 48),
}
LOGIT_SCALE = 3.875  # exp = 48.2: not CLIP's 100, so a test sees which factor was used (fp16-exact)


def clip_model(shape: str, seed: int = 0) -> CLIPModel:
    """A random CLIPModel of ``shape`` (a key of SHAPES); weights rounded to fp16 (every precision agrees)."""
    tw, tl, vw, vl, patch, size, proj = SHAPES[shape]
    torch.manual_seed(seed)
    cfg = CLIPConfig(
        text_config=dict(
            hidden_size=tw, num_attention_heads=tw // 64, intermediate_size=4 * tw, num_hidden_layers=tl,
            vocab_size=49408, max_position_embeddings=77, hidden_act="quick_gelu",
            eos_token_id=EOS_ID, bos_token_id=BOS_ID, pad_token_id=EOS_ID,
        ),
        vision_config=dict(
            hidden_size=vw, num_attention_heads=vw // 64, intermediate_size=4 * vw, num_hidden_layers=vl,
            image_size=size, patch_size=patch, hidden_act="quick_gelu",
        ),
        projection_dim=proj,
        logit_scale_init_value=LOGIT_SCALE,
    )
    model = CLIPModel(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:  # HF initialises LayerNorms to 1/0; real towers are not that clean
                p.add_(0.1 * torch.randn_like(p))
            elif "embedding" in name or "proj" in name:
                p.mul_(4.0)  # wider cosines between random texts and images: probabilities far from uniform
            p.copy_(p.half().float())
    return model


def _part(model: CLIPModel, prefix: str, config):
    """An object that looks like a text or vision model with projection (what tiny_models converts)."""
    sd = {k: v for k, v in model.state_dict().items() if k.startswith(prefix)}
    return SimpleNamespace(state_dict=lambda: sd, config=config)


def write_full(path, model: CLIPModel, layout: str):
    """A full CLIP file: transformers' CLIPModel names (``hf``) or OpenCLIP/OpenAI names (``openclip``)."""
    if layout == "hf":
        sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    else:
        text = _part(model, ("text_model.", "text_projection."), model.config.text_config)
        vision = _part(model, ("vision_model.", "visual_projection."), model.config.vision_config)
        sd = {**tm.openclip_state(text), **tm.openclip_vision_state(vision)}
        sd["logit_scale"] = model.logit_scale.detach().clone()
    return tm.save(path, sd)


def write_pair(text_path, vision_path, model: CLIPModel):
    """The same CLIP as a text encoder file and a ComfyUI clip_vision file (no logit_scale in either)."""
    sd = model.state_dict()
    tm.save(text_path, {k: v.clone() for k, v in sd.items() if k.startswith(("text_model.", "text_projection."))})
    tm.save(vision_path, {k: v.clone() for k, v in sd.items() if k.startswith(("vision_model.", "visual_projection."))})


def _features(out) -> torch.Tensor:
    """transformers 5 returns an output object (projected ``pooler_output``), 4 returned the tensor."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def reference_text(model: CLIPModel, texts: list[str]) -> torch.Tensor:
    """Normalised ``get_text_features`` (N, P) of texts (BOS + ids + EOS, padded with EOS to 77)."""
    rows = []
    for text in texts:
        ids = get_tokenizer().encode(text)[:75]
        rows.append([BOS_ID, *ids, EOS_ID] + [EOS_ID] * (75 - len(ids)))
    with torch.no_grad():
        return F.normalize(_features(model.get_text_features(input_ids=torch.tensor(rows))), dim=-1)


def reference_images(model: CLIPModel, images: torch.Tensor) -> torch.Tensor:
    """Normalised ``get_image_features`` (B, P) of a ComfyUI IMAGE batch (CLIP preprocessing)."""
    pixels = preprocess_images(images, model.config.vision_config.image_size)
    with torch.no_grad():
        return F.normalize(_features(model.get_image_features(pixel_values=pixels)), dim=-1)


def reference_probabilities(model: CLIPModel, images, labels, templates, factor=None) -> torch.Tensor:
    """Zero-shot probabilities (B, L) by hand: per label, the mean of its normalised template embeddings,
    normalised again; softmax over labels of factor x cosine (factor: the model's exp(logit_scale))."""
    text = reference_text(model, [t.replace("{}", label) for label in labels for t in templates])
    classifier = F.normalize(text.view(len(labels), len(templates), -1).mean(dim=1), dim=-1)
    factor = float(model.logit_scale.detach().exp()) if factor is None else factor
    return (factor * reference_images(model, images) @ classifier.T).softmax(dim=-1)


def reference_logits_per_image(model: CLIPModel, images, texts) -> torch.Tensor:
    """transformers' own ``CLIPModel(...).logits_per_image.softmax(-1)`` (one template)."""
    rows = []
    for text in texts:
        ids = get_tokenizer().encode(text)[:75]
        rows.append([BOS_ID, *ids, EOS_ID] + [EOS_ID] * (75 - len(ids)))
    pixels = preprocess_images(images, model.config.vision_config.image_size)
    with torch.no_grad():
        return model(input_ids=torch.tensor(rows), pixel_values=pixels).logits_per_image.softmax(dim=-1)
