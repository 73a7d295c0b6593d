"""An independent reference for DESIGN 5 (ComfyUI's encoder recipe) on transformers' CLIP towers.

It takes token ids and weights (77 per chunk), runs every chunk of a tower as one batch through
transformers' ``CLIPTextModelWithProjection`` (plus one empty-prompt row when any weight is not 1), picks
``hidden_states[layer]``, applies the final LayerNorm where the family does, applies ComfyUI's weighting
lerp, and takes the pooled vector at the first EOS of chunk 0. Nothing here imports clip_impl's towers.
"""

from __future__ import annotations

import torch

BOS, EOS = 49406, 49407


def empty_ids(pad):
    return [BOS, EOS] + [pad] * 75


def tower_reference(model, ids, weights, layer, layer_norm, pad, weighting="comfy"):
    """ids/weights: lists of 77-lists -> hidden (1, 77n, C), pooled_raw (C,) of chunk 0 (pre-projection)."""
    has_weights = any(w != 1.0 for row in weights for w in row)
    batch = list(ids) + ([empty_ids(pad)] if has_weights and weighting == "comfy" else [])
    x = torch.tensor(batch)
    with torch.no_grad():
        out = model(input_ids=x, output_hidden_states=True)
        z = out.hidden_states[layer]
        if layer_norm:
            z = model.text_model.final_layer_norm(z)
        last = model.text_model.final_layer_norm(out.hidden_states[-1])
    eos = [row.index(EOS) for row in ids]
    pooled = torch.stack([last[i, eos[i]] for i in range(len(ids))])
    w = torch.tensor(weights).unsqueeze(-1)
    zs = z[: len(ids)]
    if has_weights and weighting == "comfy":
        z_empty = z[-1]
        zs = torch.where(w == 1.0, zs, (zs - z_empty) * w + z_empty)
    elif has_weights and weighting.startswith("a1111"):
        weighted = zs * w
        if weighting == "a1111":
            weighted = torch.stack(
                [weighted[i] * (zs[i].mean() / weighted[i].mean()) for i in range(len(ids))]
            )
        zs = weighted
    return zs.reshape(1, -1, zs.shape[-1]), pooled


def project(model, pooled_raw):
    with torch.no_grad():
        return model.text_projection(pooled_raw)
