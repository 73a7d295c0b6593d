"""CLIP ViT image towers: ViT-B/32, B/16, L/14, L/14-336 (OpenAI, quick_gelu), H/14 and bigG/14 (OpenCLIP, gelu).

Parameter names follow transformers' ``CLIPVisionModelWithProjection`` (``vision_model.embeddings.
patch_embedding`` / ``class_embedding`` / ``position_embedding``, ``vision_model.pre_layrnorm`` [sic],
``vision_model.encoder.layers.N...``, ``vision_model.post_layernorm``, ``visual_projection``) except that
q/k/v are one fused ``in_proj`` as in the text tower (``transformer.py``). ``vision_loading.py`` converts
every file layout to these names.

Forward: pixels (B, 3, S, S), already preprocessed (``preprocess.py``) -> patches (B, (S/p)^2, C) ->
[class token; patches] + positions -> pre-LN -> non-causal blocks -> post-LN of the class token ->
projection (B, P).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from .pending_copies import PendingCopies
from .transformer import LAYER_NORM_EPS, Encoder, cast, embedding_table, layer_norm, linear, projection


@dataclass(frozen=True, kw_only=True)
class VisionTowerConfig:
    """Shape of a ViT image tower, built by keyword only; presets in :data:`VISION_PRESETS`, and
    :meth:`with_shape` gives a copy with some fields changed.

    Args:
        name (`str`):
            Display name used in messages, e.g. ``"ViT-L/14-336"``.
        width (`int`):
            Hidden size C of the patch embeddings and of every residual block (transformers' ``hidden_size``).
        layers (`int`):
            Number of residual blocks (``num_hidden_layers``).
        heads (`int`):
            Attention heads per block (``num_attention_heads``).
        mlp_width (`int`):
            Inner size of each block's MLP (``intermediate_size``).
        patch (`int`):
            Patch size p (``patch_size``): the patch embedding's kernel and stride.
        image_size (`int`):
            Side S of the input pixels, S x S (``image_size``); S / p patches per side (:attr:`grid`).
        activation (`str`):
            The MLP's activation (``hidden_act``): ``"quick_gelu"`` (OpenAI CLIP) or ``"gelu"`` (OpenCLIP).
        projection_dim (`int` or `None`):
            Output size P of ``visual_projection`` (``projection_dim``); None when the file has no projection.
    """

    name: str
    width: int
    layers: int
    heads: int
    mlp_width: int
    patch: int
    image_size: int
    activation: str
    projection_dim: int | None

    @property
    def grid(self) -> int:
        """Patches per side: S / p."""
        return self.image_size // self.patch

    @property
    def positions(self) -> int:
        """Class token + patches."""
        return self.grid * self.grid + 1

    def with_shape(self, **changes) -> "VisionTowerConfig":
        return replace(self, **changes)


VIT_B_32 = VisionTowerConfig(
    name="ViT-B/32", width=768, layers=12, heads=12, mlp_width=3072, patch=32, image_size=224,
    activation="quick_gelu", projection_dim=512,
)
VIT_B_16 = VisionTowerConfig(
    name="ViT-B/16", width=768, layers=12, heads=12, mlp_width=3072, patch=16, image_size=224,
    activation="quick_gelu", projection_dim=512,
)
VIT_L_14 = VisionTowerConfig(
    name="ViT-L/14", width=1024, layers=24, heads=16, mlp_width=4096, patch=14, image_size=224,
    activation="quick_gelu", projection_dim=768,
)
VIT_L_14_336 = VisionTowerConfig(
    name="ViT-L/14-336", width=1024, layers=24, heads=16, mlp_width=4096, patch=14, image_size=336,
    activation="quick_gelu", projection_dim=768,
)
VIT_H_14 = VisionTowerConfig(
    name="ViT-H/14", width=1280, layers=32, heads=16, mlp_width=5120, patch=14, image_size=224,
    activation="gelu", projection_dim=1024,
)
VIT_BIGG_14 = VisionTowerConfig(
    name="ViT-bigG/14", width=1664, layers=48, heads=16, mlp_width=8192, patch=14, image_size=224,
    activation="gelu", projection_dim=1280,
)
VISION_PRESETS = (VIT_B_32, VIT_B_16, VIT_L_14, VIT_L_14_336, VIT_H_14, VIT_BIGG_14)


class _Embeddings(nn.Module):
    def __init__(self, cfg: VisionTowerConfig, device=None, dtype=None):
        super().__init__()
        self.class_embedding = nn.Parameter(torch.empty(cfg.width, device=device, dtype=dtype))
        self.patch_embedding = nn.Conv2d(
            3, cfg.width, kernel_size=cfg.patch, stride=cfg.patch, bias=False, device=device, dtype=dtype
        )
        self.position_embedding = embedding_table(cfg.positions, cfg.width, device, dtype)


class _VisionModel(nn.Module):
    def __init__(self, cfg: VisionTowerConfig, device=None, dtype=None):
        super().__init__()
        self.embeddings = _Embeddings(cfg, device, dtype)
        # "pre_layrnorm" is transformers' spelling; kept so state dicts load under the same names.
        self.pre_layrnorm = nn.LayerNorm(cfg.width, eps=LAYER_NORM_EPS, device=device, dtype=dtype)
        self.encoder = Encoder(cfg, device, dtype)
        self.post_layernorm = nn.LayerNorm(cfg.width, eps=LAYER_NORM_EPS, device=device, dtype=dtype)


class VisionTower(nn.Module):
    """A CLIP ViT image encoder with its projection: pixels (B, 3, S, S) -> image embeddings (B, P)."""

    def __init__(
        self, cfg: VisionTowerConfig, device=None, dtype=None, *, source: str = "", compute_dtype=torch.float32
    ):
        super().__init__()
        self.config = cfg
        self.vision_model = _VisionModel(cfg, device, dtype)
        self.visual_projection = projection(cfg.width, cfg.projection_dim, device, dtype)
        self.compute_dtype = compute_dtype
        self.cache_id = uuid.uuid4().hex  # keys of cached text/image embeddings for this set of weights
        self.source = source or cfg.name  # the file (and prefix) it came from, for messages
        self.pending = PendingCopies()  # a loader fills it (tower_build.assemble)

    @property
    def device(self) -> torch.device:
        return self.vision_model.embeddings.class_embedding.device

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """Patch, class and position embeddings: (B, 3, S, S) -> (B, 1 + (S/p)^2, C) in the compute dtype."""
        cfg = self.config
        if pixels.ndim != 4 or pixels.shape[1] != 3 or pixels.shape[2:] != (cfg.image_size, cfg.image_size):
            raise ValueError(
                f"{cfg.name} takes pixels of shape (B, 3, {cfg.image_size}, {cfg.image_size}), got "
                f"{tuple(pixels.shape)}; preprocess images with clip_impl.images.preprocess first"
            )
        emb = self.vision_model.embeddings
        x = pixels.to(device=self.device, dtype=self.compute_dtype)
        x = F.conv2d(x, cast(emb.patch_embedding.weight, x), stride=cfg.patch)  # (B, C, g, g)
        x = x.flatten(2).transpose(1, 2)  # (B, g*g, C), row-major over the grid as in every CLIP
        cls = cast(emb.class_embedding, x).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1)
        return x + cast(emb.position_embedding.weight, x)

    def forward(self, pixels: torch.Tensor, project: bool = True) -> torch.Tensor:
        """Image embeddings (B, P), not normalised; ``project=False`` gives the pooled (B, C) before
        ``visual_projection``. Raises ValueError when asked to project and the tower has no projection."""
        self.pending.settle()
        x = layer_norm(self.embed(pixels), self.vision_model.pre_layrnorm)
        for block in self.vision_model.encoder.layers:
            x = block(x, causal=False)
        pooled = layer_norm(x[:, 0], self.vision_model.post_layernorm)
        if not project:
            return pooled
        if self.visual_projection is None:
            raise ValueError(
                f"{self.source}: this vision tower has no visual_projection, so its "
                "image embeddings cannot be compared with text; use a clip_vision file that includes it"
            )
        return linear(pooled, self.visual_projection)
