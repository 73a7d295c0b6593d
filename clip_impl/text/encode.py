"""Prompt -> conditioning for SD1.x, SD2.x and SDXL, with ComfyUI's or A1111's weighting.

The recipe (DESIGN 4 and 5): each tower chunks the prompt on its own; all chunks of a tower are encoded
as one batch at the layer ``clip_skip`` selects; weights are applied per token; chunks are concatenated
along the token axis; SDXL puts CLIP-L's 768 channels before CLIP-G's 1280 and pads the tower with fewer
chunks with empty-prompt chunks. The pooled vector comes from the first chunk (or the mean of chunks).

Weighting modes:
- ``comfy``: z' = z_empty + (z - z_empty) * w, z_empty being the empty prompt at the same layer.
- ``a1111``: z' = z * w, then each chunk rescaled so its mean equals its mean before weighting.
- ``a1111_no_norm``: z' = z * w.  ``none``: brackets are plain text.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal, get_args

import torch

from ..cache import CHUNK_CACHE, ByteLRUCache
from .chunking import Chunking, TokenChunk
from ..clip_skip import AppliesTo, LayerChoice, layer_warnings, resolve_layers
from ..model import ClipModel
from .pipeline import WEIGHTINGS, Weighting, prompt_chunks
from ..towers.transformer import linear

log = logging.getLogger(__name__)

MAX_WEIGHT = 1e4  # beyond this a weight only comes from runaway nesting; it would overflow fp32 maths
PooledMode = Literal["first_chunk", "mean"]
POOLED_MODES: tuple[PooledMode, ...] = get_args(PooledMode)
EmptyPromptMode = Literal["encode", "zeros"]
EMPTY_PROMPT_MODES: tuple[EmptyPromptMode, ...] = get_args(EmptyPromptMode)


@dataclass(frozen=True, kw_only=True)
class EncodeSettings:
    """Everything besides the prompt that decides the conditioning (built by keyword only)."""

    clip_skip: int = 0
    clip_skip_applies_to: AppliesTo = "both"  # SDXL only: both, clip_l, clip_g
    chunking: Chunking = "comfy"
    comma_backtrack: int = 20
    weighting: Weighting = "comfy"
    pooled: PooledMode = "first_chunk"
    empty_prompt: EmptyPromptMode = "encode"

    def validate(self) -> None:
        for name, value, allowed in (
            ("weighting", self.weighting, WEIGHTINGS),
            ("pooled", self.pooled, POOLED_MODES),
            ("empty_prompt", self.empty_prompt, EMPTY_PROMPT_MODES),
        ):
            if value not in allowed:
                raise ValueError(f"{name}={value!r}; use one of {', '.join(allowed)}")


@dataclass
class EncodedText:
    """cond: (1, 77 * chunks, C) float32; pooled: (1, P) float32; plus what was resolved."""

    cond: torch.Tensor
    pooled: torch.Tensor
    chunks: int
    layers: dict[str, LayerChoice]
    family: str
    tower_chunks: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def encode_prompt(
    model: ClipModel,
    text: str,
    settings: EncodeSettings = EncodeSettings(),
    text_l: str | None = None,
    cache: ByteLRUCache | None = CHUNK_CACHE,
    embeddings=None,
) -> EncodedText:
    """Encode ``text`` (SDXL: for CLIP-G, and for CLIP-L unless ``text_l`` is non-empty).

    ``embeddings`` (optional) is an embedding library with ``resolver(tower, syntax, width)`` for
    embedding references (``embedding:name``, or bare names in A1111 syntax); its resolvers' warnings
    (missing, unreadable or misfit embeddings) join ``warnings``. Returns float32 tensors on the tower's device.
    """
    settings.validate()
    family = model.family
    layers = resolve_layers(family, model.tower_layers(), settings.clip_skip, settings.clip_skip_applies_to)
    warnings = layer_warnings(layers)
    for w in warnings:
        log.warning(w)
    texts = {t: text for t in family.towers}
    if text_l and "l" in texts and family.name == "sdxl":
        texts["l"] = text_l

    if settings.empty_prompt == "zeros" and all(not t.strip() for t in texts.values()):
        return _zeros(model, layers, warnings)

    chunks = {}
    for t in family.towers:
        found = prompt_chunks(
            texts[t],
            chunking=settings.chunking,
            comma_backtrack=settings.comma_backtrack,
            weighting=settings.weighting,
            embeddings=embeddings,
            tower=t,
            width=model.towers[t].config.width,
        )
        chunks[t] = found.chunks
        # Embeddings that are missing, unreadable or of the wrong width: say so next to the layer warnings.
        warnings += [w for w in found.warnings if w not in warnings]
    _check_weights(chunks)
    own = {t: len(c) for t, c in chunks.items()}
    total = max(own.values())
    for t in family.towers:  # pad the shorter tower with empty-prompt chunks (CLIPTextEncodeSDXL)
        chunks[t] = chunks[t] + [TokenChunk() for _ in range(total - own[t])]

    conds = []
    pooled = None
    for t in family.towers:
        tower = model.towers[t]
        is_pooled = t == family.pooled_tower
        rows = (range(own[t]) if settings.pooled == "mean" else range(1)) if is_pooled else ()
        # ComfyUI's weighting needs the empty prompt at the same layer: encoded in the same batch (as
        # ComfyUI does) unless the cache already holds it, which it does after the first weighted prompt.
        lerp = settings.weighting == "comfy" and any(tok.weight != 1.0 for c in chunks[t] for tok in c.body)
        batch = chunks[t] + [TokenChunk()] if lerp else chunks[t]
        hidden, pooled_rows = encode_chunks(tower, batch, layers[t], set(rows), cache)
        z_empty = hidden[-1] if lerp else None
        conds.append(apply_weights(hidden[: len(chunks[t])], chunks[t], settings.weighting, z_empty))
        if is_pooled:
            pooled = torch.stack([pooled_rows[r] for r in rows]).mean(dim=0, keepdim=True)
            if family.project_pooled and tower.text_projection is not None:
                pooled = _project(tower, pooled)
    cond = torch.cat(conds, dim=-1).reshape(1, total * 77, -1)
    if not (bool(torch.isfinite(cond).all()) and bool(torch.isfinite(pooled).all())):
        sources = ", ".join(model.towers[t].source for t in family.towers)
        raise ValueError(
            f"encoding gave NaN or infinite values ({sources}, weights {settings.weighting}): the model's weights "
            "overflow in this precision, or a prompt weight is extreme; try precision fp32 or smaller weights"
        )
    return EncodedText(cond, pooled, total, layers, family.name, own, warnings)


def _check_weights(chunks: dict) -> None:
    for tower_chunks in chunks.values():
        for chunk in tower_chunks:
            for tok in chunk.body:
                if not abs(tok.weight) <= MAX_WEIGHT:
                    raise ValueError(
                        f"prompt weight {tok.weight:g} is out of range (at most {MAX_WEIGHT:g} either way): "
                        "check for unbalanced or deeply nested brackets"
                    )


def _project(tower, pooled: torch.Tensor) -> torch.Tensor:
    # linear() casts device and dtype: the projection may sit apart from the pooled vector (partial unload).
    return linear(pooled, tower.text_projection)


def _zeros(model: ClipModel, layers, warnings) -> EncodedText:
    family = model.family
    width = sum(model.towers[t].config.width for t in family.towers)
    tower = model.towers[family.pooled_tower]
    cfg = tower.config
    pooled_dim = cfg.projection_dim if family.project_pooled and cfg.projection_dim else cfg.width
    device = tower.device
    return EncodedText(
        torch.zeros(1, 77, width, device=device),
        torch.zeros(1, pooled_dim, device=device),
        1,
        layers,
        family.name,
        {t: 1 for t in family.towers},
        warnings,
    )


def encode_chunks(
    tower, chunks: list[TokenChunk], choice: LayerChoice, pooled_rows: set[int], cache: ByteLRUCache | None
) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """Hidden states (n, 77, C) of each chunk at ``choice``, and the unprojected pooled vector of the
    rows in ``pooled_rows``. Chunks found in ``cache`` are not encoded again; the rest run as one batch.
    """
    pad = tower.config.pad_id
    keys = [(tower.cache_id, choice.layer, choice.layer_norm, c.key(pad)) for c in chunks]
    found = [cache.get(k) if cache is not None else None for k in keys]
    todo = [i for i, f in enumerate(found) if f is None or (i in pooled_rows and f[1] is None)]
    if todo:
        unique = list(dict.fromkeys(keys[i] for i in todo))  # the same chunk twice is encoded once
        first = {k: next(i for i in todo if keys[i] == k) for k in unique}
        rows = [first[k] for k in unique]
        ids = torch.tensor([chunks[i].ids(pad) for i in rows], dtype=torch.long)
        vectors = [
            (r, pos, tok.embedding.vectors[tok.index])
            for r, i in enumerate(rows)
            for pos, tok in chunks[i].embeddings()
        ]
        want = [r for r, i in enumerate(rows) if any(keys[j] == keys[i] for j in pooled_rows)]
        with torch.inference_mode():
            out = tower(ids, choice.layer, choice.layer_norm, pooled_rows=want, vectors=vectors, project=False)
        for r, key in enumerate(unique):
            value = (out.hidden[r].clone(), out.pooled[want.index(r)].clone() if r in want else None)
            if cache is not None:
                cache.put(key, value)
            for i in todo:
                if keys[i] == key:
                    found[i] = value
    hidden = torch.stack([f[0] for f in found])
    return hidden, {i: found[i][1] for i in pooled_rows}


def apply_weights(
    hidden: torch.Tensor, chunks: list[TokenChunk], weighting: Weighting, z_empty: torch.Tensor | None = None
) -> torch.Tensor:
    """Apply per-token weights to hidden (n, 77, C); returns a new tensor.

    ``z_empty`` (77, C): the empty prompt's hidden states at the same layer, needed by ``comfy`` weighting.
    """
    weights = torch.tensor([c.weights() for c in chunks], dtype=hidden.dtype, device=hidden.device)
    if weighting == "none" or bool((weights == 1.0).all()):
        return hidden
    w = weights.unsqueeze(-1)  # (n, 77, 1)
    if weighting == "comfy":
        if z_empty is None:
            raise ValueError("comfy weighting needs the empty prompt's hidden states (z_empty)")
        out = (hidden - z_empty) * w + z_empty
        return torch.where(w == 1.0, hidden, out)
    out = hidden * w
    if weighting == "a1111":  # A1111 "Original" emphasis: restore each chunk's mean
        before = hidden.mean(dim=(1, 2), keepdim=True)
        after = out.mean(dim=(1, 2), keepdim=True)
        ratio = before / after
        # A1111 divides blindly; a chunk whose weighted mean is 0 would turn into inf/NaN.
        bad = ~torch.isfinite(ratio)
        if bool(bad.any()):
            log.warning("a1111 weighting: a chunk's weighted mean is 0; left that chunk unrescaled")
            ratio = torch.where(bad, torch.ones_like(ratio), ratio)
        out = out * ratio
    return out
