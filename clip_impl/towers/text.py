"""CLIP text towers: CLIP ViT-L/14 (quick_gelu) and OpenCLIP ViT-H/14 and ViT-bigG/14 (gelu).

Parameter names follow transformers' ``CLIPTextModelWithProjection`` (``text_model.embeddings...``,
``text_model.encoder.layers.N...``, ``text_model.final_layer_norm``, ``text_projection``) except that q/k/v
are one fused ``in_proj`` (see ``transformer.py``). ``formats.py`` converts every file layout to these.

Layer numbering: layer ``n`` is the output of the n-th block (transformers' ``hidden_states[n]``), so
layer ``num_layers`` is the final block. The pooled vector is always the final layer after the final
LayerNorm, at the first EOS of each row, projected when the tower has a projection.
"""

from __future__ import annotations

import uuid
import weakref
from dataclasses import dataclass, replace

import torch
from torch import nn

from ..cache import forget
from .pending_copies import PendingCopies
from ..tokenizer import EOS_ID, VOCAB_SIZE
from .transformer import (
    LAYER_NORM_EPS,
    Encoder,
    embedding_table,
    layer_norm,
    linear,
    projection,
    stored_table,
    weights,
)

HEAD_WIDTH = 64  # every CLIP text tower uses 64-wide heads; the head count is width / 64


@dataclass(frozen=True, kw_only=True)
class TextTowerConfig:
    """Shape of a text tower, built by keyword only. Presets: :data:`CLIP_L`, :data:`OPENCLIP_H`,
    :data:`OPENCLIP_BIGG`; :meth:`with_shape` gives a copy with some fields changed.

    Args:
        name (`str`):
            Short family name used in messages and metadata (``"clip_l"``, ``"clip_h"``, ``"clip_g"``).
        width (`int`):
            Hidden size C of the embeddings and of every residual block (transformers' ``hidden_size``).
        layers (`int`):
            Number of residual blocks (``num_hidden_layers``); layer ``n`` is the output of block ``n``.
        heads (`int`):
            Attention heads per block (``num_attention_heads``); every CLIP text tower has width / 64.
        mlp_width (`int`):
            Inner size of each block's MLP (``intermediate_size``), 4 * width in every CLIP.
        activation (`str`):
            The MLP's activation (``hidden_act``): ``"quick_gelu"`` (OpenAI CLIP) or ``"gelu"`` (OpenCLIP).
        projection_dim (`int` or `None`):
            Output size P of ``text_projection`` (``projection_dim``); None when the file has no projection.
        pad_id (`int`):
            Token id after EOS in a chunk: EOS for CLIP-L, 0 for OpenCLIP towers.
        vocab_size (`int`, *optional*, defaults to 49408):
            Rows of the token embedding table (``vocab_size``).
        positions (`int`, *optional*, defaults to 77):
            Rows of the position embedding table (``max_position_embeddings``): the chunk length.
    """

    name: str
    width: int
    layers: int
    heads: int
    mlp_width: int
    activation: str
    projection_dim: int | None
    pad_id: int
    vocab_size: int = VOCAB_SIZE
    positions: int = 77

    def with_shape(self, **changes) -> "TextTowerConfig":
        return replace(self, **changes)


CLIP_L = TextTowerConfig(
    name="clip_l", width=768, layers=12, heads=12, mlp_width=3072, activation="quick_gelu", projection_dim=768,
    pad_id=EOS_ID,
)
OPENCLIP_H = TextTowerConfig(
    name="clip_h", width=1024, layers=24, heads=16, mlp_width=4096, activation="gelu", projection_dim=1024, pad_id=0,
)
OPENCLIP_BIGG = TextTowerConfig(
    name="clip_g", width=1280, layers=32, heads=20, mlp_width=5120, activation="gelu", projection_dim=1280, pad_id=0,
)


@dataclass
class TowerOutput:
    """hidden: (B, 77, C) at the selected layer; pooled: (B, P or C) or None."""

    hidden: torch.Tensor
    pooled: torch.Tensor | None


class _Embeddings(nn.Module):
    def __init__(self, cfg: TextTowerConfig, device=None, dtype=None):
        super().__init__()
        self.token_embedding = embedding_table(cfg.vocab_size, cfg.width, device, dtype)
        self.position_embedding = embedding_table(cfg.positions, cfg.width, device, dtype)


class _TextModel(nn.Module):
    def __init__(self, cfg: TextTowerConfig, device=None, dtype=None):
        super().__init__()
        self.embeddings = _Embeddings(cfg, device, dtype)
        self.encoder = Encoder(cfg, device, dtype)
        self.final_layer_norm = nn.LayerNorm(cfg.width, eps=LAYER_NORM_EPS, device=device, dtype=dtype)


class TextTower(nn.Module):
    """A CLIP text transformer with layer selection and a pooled (optionally projected) output."""

    def __init__(
        self,
        cfg: TextTowerConfig,
        device=None,
        dtype=None,
        *,
        source: str = "",
        compute_dtype=torch.float32,
        cache_id: str | None = None,
    ):
        super().__init__()
        self.config = cfg
        self.text_model = _TextModel(cfg, device, dtype)
        self.text_projection = projection(cfg.width, cfg.projection_dim, device, dtype)
        self.compute_dtype = compute_dtype
        # Keys of cached encodings: each tower (each set of weights) gets its own, never reused. Its cached
        # encodings go when the tower goes; a given ``cache_id`` belongs to its owner, who drops them.
        if cache_id is None:
            cache_id = uuid.uuid4().hex
            weakref.finalize(self, forget, cache_id)
        self.cache_id = cache_id
        self.source = source or cfg.name  # the file (and prefix) it came from, for messages
        self.pending = PendingCopies()  # a loader fills it (tower_build.assemble)

    @property
    def device(self) -> torch.device:
        return self.text_model.embeddings.token_embedding.weight.device

    def embed(self, ids: torch.Tensor, vectors: list[tuple[int, int, torch.Tensor]] = ()) -> torch.Tensor:
        """Token + position embeddings: ids (B, T) -> (B, T, C) in the compute dtype.

        ``vectors`` are (row, position, vector (C,)) that replace token embeddings (textual inversion).
        """
        embeddings = self.text_model.embeddings
        x = stored_table(embeddings.token_embedding, ids.device)[ids].to(self.compute_dtype)
        for row, pos, vec in vectors:
            x[row, pos] = vec.to(device=x.device, dtype=x.dtype)
        # Device and dtype: a host may have moved this table apart from the rest (a partial unload).
        pos_table, _ = weights(embeddings.position_embedding, x)
        return x + pos_table[: ids.shape[1]]

    def forward(
        self,
        ids: torch.Tensor,
        layer: int,
        layer_norm_hidden: bool,
        pooled_rows: list[int] | None = None,
        vectors: list[tuple[int, int, torch.Tensor]] = (),
        project: bool = True,
    ) -> TowerOutput:
        """Encode ids (B, 77) and return the hidden states of ``layer`` (1..num_layers), (B, 77, C).

        ``pooled_rows``: rows that need the pooled vector (None: all; []: none), returned in that order,
        (len(pooled_rows), P); ``project=False`` returns it before ``text_projection`` (SD1.x conditioning).
        Blocks after ``layer`` run only for the pooled vector: for those rows, on positions up to their
        last EOS, and the final block only at each row's first EOS (causal attention makes this exact).
        """
        cfg = self.config
        if not 1 <= layer <= cfg.layers:
            raise ValueError(f"layer {layer} is out of range for {cfg.name} (1..{cfg.layers})")
        self.pending.settle()
        blocks = self.text_model.encoder.layers
        ids = ids.to(self.device)
        x = self.embed(ids, vectors)
        for block in blocks[:layer]:
            x = block(x, causal=True)
        hidden = layer_norm(x, self.text_model.final_layer_norm) if layer_norm_hidden else x
        if pooled_rows is not None and len(pooled_rows) == 0:
            return TowerOutput(hidden, None)
        if pooled_rows is not None:
            index = torch.tensor(pooled_rows, dtype=torch.long, device=x.device)
            x, ids = x[index], ids[index]
        eos = first_eos(ids)
        if layer < cfg.layers:
            x = x[:, : int(eos.max()) + 1]  # later positions never reach an EOS row
            for block in blocks[layer:-1]:
                x = block(x, causal=True)
            final = blocks[-1].forward_rows(x, eos)[:, 0]
        else:
            final = x[torch.arange(x.shape[0], device=x.device), eos]
        pooled = layer_norm(final, self.text_model.final_layer_norm)
        if project and self.text_projection is not None:
            pooled = linear(pooled, self.text_projection)
        return TowerOutput(hidden, pooled)


def first_eos(ids: torch.Tensor) -> torch.Tensor:
    """Index of the first EOS in each row (B, T) -> (B,); the last position if a row has none."""
    is_eos = ids == EOS_ID
    idx = is_eos.int().argmax(dim=-1)
    return torch.where(is_eos.any(dim=-1), idx, torch.full_like(idx, ids.shape[1] - 1))
