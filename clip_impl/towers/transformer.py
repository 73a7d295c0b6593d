"""The pre-LayerNorm transformer block shared by CLIP's text and vision towers.

``x += attn(ln1(x)); x += mlp(ln2(x))`` with LayerNorm eps 1e-5, as in OpenAI CLIP, OpenCLIP and
transformers' ``CLIPEncoderLayer``. Attention runs through ``scaled_dot_product_attention``; q, k and v
are one fused projection (OpenCLIP's ``in_proj`` layout; HF's q/k/v are stacked by rows on load).

Weights may be stored in a narrower dtype than the compute dtype (e.g. fp16 storage, fp32 compute, as
ComfyUI does), or on another device (a host that partially offloaded a tower); they are then cast per use.
A :class:`Borrowed` leaf holds no weights and fetches them at each use (ComfyUI's own text encoders).
A freshly loaded tower may still compute with the file's own tensors (``pending_copies.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LAYER_NORM_EPS = 1e-5
ACTIVATIONS = {
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
    "gelu": F.gelu,
}


def embedding_table(rows: int, width: int, device=None, dtype=None) -> nn.Embedding:
    """An ``nn.Embedding`` without random init: its weights always come from a file, and initialising on
    the meta device costs ~2 s the first time in a process (torch imports its Python meta kernels)."""
    return nn.Embedding(rows, width, _weight=torch.empty(rows, width, device=device, dtype=dtype))


class FileLinear(nn.Linear):
    """An ``nn.Linear`` without random init: its weights always come from a file (a tower of bigG's
    size makes 130 of them, whose init costs ~0.1 s of a load even on the meta device)."""

    def reset_parameters(self) -> None:
        pass


def projection(width: int, dim: int | None, device=None, dtype=None) -> nn.Linear | None:
    """A tower's bias-free output projection ``width -> dim`` (``text_projection``/``visual_projection``),
    or None for a tower stored without one (SD1.x checkpoints drop CLIP-L's)."""
    return FileLinear(width, dim, bias=False, device=device, dtype=dtype) if dim else None


def cast(param: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``param`` in the dtype/device of ``like`` (a no-op when they already agree)."""
    if param.dtype == like.dtype and param.device == like.device:
        return param
    return param.to(device=like.device, dtype=like.dtype)


class Borrowed(nn.Module):
    """A Linear, LayerNorm or Embedding that holds no weights of its own: ``fetch(dtype, device)`` gives
    its (weight, bias) at each use, e.g. a host's layer cast (and patched) by the host. ``dtype`` None
    keeps the stored dtype. Towers built over another implementation's modules use these as leaves."""

    def __init__(self, fetch, normalized_shape: tuple[int, ...] | None = None):
        super().__init__()
        self.fetch = fetch
        self.normalized_shape = normalized_shape


def weights(layer: nn.Module, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(weight, bias) of a layer in ``like``'s dtype and on its device (a moved or borrowed layer too)."""
    if isinstance(layer, Borrowed):
        return layer.fetch(like.dtype, like.device)
    bias = getattr(layer, "bias", None)  # an nn.Embedding has none
    return cast(layer.weight, like), (None if bias is None else cast(bias, like))


def stored_table(layer: nn.Module, device: torch.device) -> torch.Tensor:
    """An embedding table (rows, C) on ``device`` in its stored dtype (looked up before any cast)."""
    if isinstance(layer, Borrowed):
        return layer.fetch(None, device)[0]
    return layer.weight if layer.weight.device == device else layer.weight.to(device)


def layer_norm(x: torch.Tensor, norm: nn.Module) -> torch.Tensor:
    """LayerNorm with the module's parameters cast to x's dtype and device."""
    w, b = weights(norm, x)
    return F.layer_norm(x, norm.normalized_shape, w, b, LAYER_NORM_EPS)


def linear(x: torch.Tensor, layer: nn.Module) -> torch.Tensor:
    """``layer(x)`` with its weights cast to x's dtype and device (x: (..., in) -> (..., out))."""
    w, b = weights(layer, x)
    return F.linear(x, w, b)


class Attention(nn.Module):
    """Multi-head self-attention with a fused q/k/v projection ``in_proj`` ([3C, C], q rows first)."""

    def __init__(self, width: int, heads: int, device=None, dtype=None):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by {heads} heads")
        self.heads = heads
        self.in_proj = FileLinear(width, 3 * width, device=device, dtype=dtype)
        self.out_proj = FileLinear(width, width, device=device, dtype=dtype)

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        b, n, c = t.shape
        return t.view(b, n, self.heads, c // self.heads).transpose(1, 2)  # (B, H, T, D)

    def forward(self, x: torch.Tensor, causal: bool) -> torch.Tensor:
        """x: (B, T, C) -> (B, T, C)."""
        b, n, c = x.shape
        q, k, v = linear(x, self.in_proj).split(c, dim=-1)
        out = F.scaled_dot_product_attention(self._split(q), self._split(k), self._split(v), is_causal=causal)
        return linear(out.transpose(1, 2).reshape(b, n, c), self.out_proj)

    def forward_rows(self, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Causal attention output only at position ``rows[b]`` of each sequence.

        x: (B, T, C), rows: (B,) long -> (B, 1, C). Keys/values come from all positions, queries from
        one; positions after ``rows[b]`` are masked, which equals the causal result at that row.
        """
        b, n, c = x.shape
        w, bias = weights(self.in_proj, x)
        picked = x[torch.arange(b, device=x.device), rows].unsqueeze(1)  # (B, 1, C)
        q = F.linear(picked, w[:c], bias[:c])
        kv = F.linear(x, w[c:], bias[c:])
        k, v = kv.split(c, dim=-1)
        mask = torch.arange(n, device=x.device)[None, :] <= rows[:, None]  # (B, T)
        out = F.scaled_dot_product_attention(
            self._split(q), self._split(k), self._split(v), attn_mask=mask[:, None, None, :]
        )
        return linear(out.transpose(1, 2).reshape(b, 1, c), self.out_proj)


class MLP(nn.Module):
    def __init__(self, width: int, hidden: int, activation: str, device=None, dtype=None):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; use one of {', '.join(ACTIVATIONS)}")
        self.activation = activation
        self.fc1 = FileLinear(width, hidden, device=device, dtype=dtype)
        self.fc2 = FileLinear(hidden, width, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(ACTIVATIONS[self.activation](linear(x, self.fc1)), self.fc2)


class Block(nn.Module):
    """One pre-LN residual block: HF names ``layer_norm1``, ``self_attn``, ``layer_norm2``, ``mlp``."""

    def __init__(self, width: int, heads: int, mlp_width: int, activation: str, device=None, dtype=None):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(width, eps=LAYER_NORM_EPS, device=device, dtype=dtype)
        self.self_attn = Attention(width, heads, device=device, dtype=dtype)
        self.layer_norm2 = nn.LayerNorm(width, eps=LAYER_NORM_EPS, device=device, dtype=dtype)
        self.mlp = MLP(width, mlp_width, activation, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor, causal: bool) -> torch.Tensor:
        """x: (B, T, C) -> (B, T, C)."""
        x = x + self.self_attn(layer_norm(x, self.layer_norm1), causal)
        return x + self.mlp(layer_norm(x, self.layer_norm2))

    def forward_rows(self, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """The causal block's output at one position per sequence: (B, T, C), (B,) -> (B, 1, C)."""
        picked = x[torch.arange(x.shape[0], device=x.device), rows].unsqueeze(1)
        y = picked + self.self_attn.forward_rows(layer_norm(x, self.layer_norm1), rows)
        return y + self.mlp(layer_norm(y, self.layer_norm2))


class Encoder(nn.Module):
    """``layers`` pre-LN blocks under transformers' name ``encoder.layers.N``."""

    def __init__(self, cfg, device=None, dtype=None):
        super().__init__()
        self.layers = nn.ModuleList(
            Block(cfg.width, cfg.heads, cfg.mlp_width, cfg.activation, device=device, dtype=dtype)
            for _ in range(cfg.layers)
        )
