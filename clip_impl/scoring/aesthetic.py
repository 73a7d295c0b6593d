"""LAION aesthetic predictors: a small head on the L2-normalised CLIP image embedding, no prompt.

Two published head shapes, told apart by their state-dict keys (file names never decide):

- **v1** (LAION-AI/aesthetic-predictor, ``sa_0_4_vit_b_32_linear.pth``, ``sa_0_4_vit_b_16_linear.pth``,
  ``sa_0_4_vit_l_14_linear.pth``): one ``Linear(512|768, 1)``, keys ``weight`` [1, D] and ``bias`` [1].
- **v2** "improved" (christophschuhmann/improved-aesthetic-predictor, ``sac+logos+ava1-l14-linearMSE.pth``):
  an MLP 768-1024-128-64-16-1, keys ``layers.{0,2,4,6,7}.{weight,bias}`` (the odd indexes were Dropout
  layers, inactive at inference). Its published inference code has no activation between the layers (the
  ReLUs are commented out), so the head is a chain of affine maps; we compute exactly that.

Both projects compute ``head(image_features / ||image_features||)`` with OpenAI CLIP's preprocessing
(short side to 224 bicubic, centre crop, CLIP mean/std): the same pixels as our ``preprocess.py``.
The head's input width must equal the vision tower's embedding width (``projection_dim``: 512 for
ViT-B/32 and B/16, 768 for ViT-L/14); :func:`check_fits` refuses a mismatch naming both.

Files: ``.safetensors``, or ``.pth``/``.pt`` read with ``torch.load(weights_only=True)`` (a
``{"state_dict": ...}`` wrapper is unwrapped). A head file is small: before any tensor is read, the file's
size, its zip listing or header, and every tensor's dtype and claimed shape are checked against what a head
may hold (``weights.file_checks.AESTHETIC_HEAD``: at most 64 MiB of file, 64 tensors, 4 M values, 4096 wide,
float16/bfloat16/float32/float64), so a file that claims gigabytes is refused in a few MB of memory.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ..images.preprocess import check_image_batch, preprocess_images
from ..weights.file_checks import AESTHETIC_HEAD, check_loaded_tensors
from ..weights.files import ModelFileError, load_pickle_weights, load_safetensors_weights
from .finite import not_finite_reasons

HEAD_SUFFIXES = (".safetensors", ".pth", ".pt")
_MLP_KEY = re.compile(r"layers\.(\d+)\.(weight|bias)$")
# The widths of the published heads' input, by the CLIP whose image embeddings they read.
_KNOWN_INPUTS = {512: "ViT-B/32 or ViT-B/16", 768: "ViT-L/14"}


@dataclass(frozen=True)
class AestheticHead:
    """A loaded aesthetic head: its kind ("v1 linear" or "v2 MLP"), the affine layers in order
    ([out, in] weights and [out] biases, float32), and the file it came from."""

    kind: str
    weights: tuple[torch.Tensor, ...]
    biases: tuple[torch.Tensor, ...]
    source: str = ""

    @property
    def input_width(self) -> int:
        return int(self.weights[0].shape[1])

    def describe(self) -> str:
        sizes = "-".join(str(int(w.shape[1])) for w in self.weights) + "-1"
        return f"{self.kind} {sizes} ({self.source})" if self.source else f"{self.kind} {sizes}"

    def __call__(self, embeds: torch.Tensor) -> torch.Tensor:
        """L2-normalised image embeddings (B, D) -> scores (B,) float32 (no normalisation here)."""
        x = embeds.float()
        for w, b in zip(self.weights, self.biases):
            x = F.linear(x, w.to(x.device), b.to(x.device))
        return x[:, 0]


def head_from_state_dict(sd: dict, source: str = "") -> AestheticHead:
    """An :class:`AestheticHead` from a state dict in either published layout; ModelFileError otherwise."""
    name = source or "the aesthetic head"
    tensors = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    # dtype, layout and claimed shape before any arithmetic: a zero-stride view claims more than it holds.
    check_loaded_tensors(name, tensors, AESTHETIC_HEAD)
    if set(tensors) == {"weight", "bias"}:
        layers = [(tensors["weight"], tensors["bias"])]
        kind = "v1 linear"
    else:
        found: dict[int, dict] = {}
        for key, t in tensors.items():
            m = _MLP_KEY.match(key)
            if m is None:
                raise ModelFileError(
                    f"{name}: unexpected key {key!r}; an aesthetic head holds either 'weight'/'bias' (LAION v1 "
                    "linear) or 'layers.N.weight'/'layers.N.bias' (the improved v2 MLP). Is this an aesthetic "
                    "predictor file?"
                )
            found.setdefault(int(m.group(1)), {})[m.group(2)] = t
        if not found:
            raise ModelFileError(f"{name}: no tensors; expected a LAION aesthetic predictor head")
        layers = []
        for index in sorted(found):
            part = found[index]
            if set(part) != {"weight", "bias"}:
                raise ModelFileError(f"{name}: layers.{index} has {sorted(part)}; a linear layer needs weight and bias")
            layers.append((part["weight"], part["bias"]))
        kind = "v2 MLP"
    _check_chain(layers, name)
    weights = tuple(w.detach().float().contiguous() for w, _ in layers)
    biases = tuple(b.detach().float().reshape(-1).contiguous() for _, b in layers)
    return AestheticHead(kind, weights, biases, source)


def _check_chain(layers: list, name: str) -> None:
    """Each layer's input is the previous one's output, and the last gives one number."""
    width = None
    for i, (w, b) in enumerate(layers):
        if w.ndim != 2 or b.numel() != w.shape[0]:
            raise ModelFileError(
                f"{name}: layer {i} has weight {tuple(w.shape)} and bias {tuple(b.shape)}; not a linear layer"
            )
        if width is not None and w.shape[1] != width:
            raise ModelFileError(f"{name}: layer {i} takes {w.shape[1]} inputs but the layer before gives {width}")
        if not bool(torch.isfinite(w).all() and torch.isfinite(b).all()):
            raise ModelFileError(f"{name}: layer {i} holds NaN or infinite weights; the file is corrupt")
        width = int(w.shape[0])
    if width != 1:
        raise ModelFileError(f"{name}: the last layer gives {width} outputs; an aesthetic head gives 1 score")


def load_head(path: str | os.PathLike) -> AestheticHead:
    """Read an aesthetic head file (.safetensors, .pth, .pt); ModelFileError naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: aesthetic head file not found")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        sd = load_safetensors_weights(path, AESTHETIC_HEAD)
    elif suffix in (".pth", ".pt"):
        sd = load_pickle_weights(path, AESTHETIC_HEAD)
    else:
        raise ModelFileError(f"{path}: unknown file type {path.suffix!r}; use {', '.join(HEAD_SUFFIXES)}")
    return head_from_state_dict(sd, path.name)


def check_fits(head: AestheticHead, vision, model_name: str = "") -> None:
    """Refuse a head whose input width is not the vision tower's embedding width (both are named)."""
    have = vision.config.projection_dim
    want = head.input_width
    if have == want:
        return
    tower = model_name or vision.config.name
    made_for = _KNOWN_INPUTS.get(want)
    raise ValueError(
        f"aesthetic head {head.source or head.kind} reads {want}-wide CLIP image embeddings"
        + (f" ({made_for})" if made_for else "")
        + f", but the vision tower of {tower} gives {have}-wide embeddings; load the CLIP the head was trained "
        "on (v1 *_vit_b_32_* / *_vit_b_16_*: ViT-B/32 or B/16, 512; v1 *_vit_l_14_* and v2: ViT-L/14, 768)"
    )


@dataclass
class AestheticResult:
    """Per-image aesthetic scores (batch order), with the head and model used. ``invalid``: index -> why,
    for the scores that are NaN or infinite (never a score: the summary and the best image leave them out)."""

    scores: list[float]
    head: str
    model: str = ""
    notes: list[str] = field(default_factory=list)
    invalid: dict[int, str] = field(default_factory=dict)

    @property
    def finite(self) -> list[int]:
        """The indexes of the finite scores, in batch order."""
        return [i for i in range(len(self.scores)) if i not in self.invalid]

    @property
    def mean(self) -> float:
        """The mean of the finite scores (NaN when there is none)."""
        values = [self.scores[i] for i in self.finite]
        return sum(values) / len(values) if values else math.nan

    @property
    def best_index(self) -> int:
        """Index of the highest finite score (the first on ties; 0 when no score is finite)."""
        return max(self.finite, key=lambda i: (self.scores[i], -i), default=0)

    @property
    def report(self) -> str:
        n, best = len(self.scores), self.best_index
        values = [self.scores[i] for i in self.finite]
        lines = [f"Aesthetic score ({self.head}{', ' + self.model if self.model else ''})"]
        if values:
            lines.append(
                f"{n} image{'s' if n != 1 else ''}: mean {self.mean:.4f}, min {min(values):.4f}, "
                f"max {max(values):.4f}, best #{best}"
                + (f"; {len(self.invalid)} not finite" if self.invalid else "")
            )
        else:
            lines.append(f"{n} image{'s' if n != 1 else ''}: no finite score")
        lines += [f"  #{i}: {s:.4f}" if i not in self.invalid else f"  #{i}: {self.invalid[i]}"
                  for i, s in enumerate(self.scores)]
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


def embeddings_for_head(vision, images: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
    """IMAGE [B, H, W, C] (0..1) -> L2-normalised image embeddings (B, P) float32, vision tower only."""
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}; use 1 or more")
    images = check_image_batch(images)
    out = []
    for start in range(0, images.shape[0], batch_size):
        pixels = preprocess_images(images[start : start + batch_size], vision.config.image_size, vision.device, vision.compute_dtype)
        with torch.inference_mode():
            out.append(F.normalize(vision(pixels).float(), dim=-1))
    return torch.cat(out)


def aesthetic_scores(model, head: AestheticHead, images: torch.Tensor, batch_size: int = 8) -> AestheticResult:
    """Score every image of an IMAGE batch [B, H, W, C] with ``head`` on ``model``'s vision tower."""
    if model.vision is None:
        raise ValueError(
            f"{', '.join(model.sources) or 'this model'} has no vision tower; an aesthetic head reads CLIP image "
            "embeddings: load a full CLIP (ViT-L/14 for the v2 head) or a text encoder + its clip_vision file"
        )
    check_fits(head, model.vision, ", ".join(os.path.basename(s) for s in model.sources))
    embeds = embeddings_for_head(model.vision, images, batch_size)
    with torch.inference_mode():
        scores = head(embeds).tolist()
    invalid = not_finite_reasons(scores, embeds, what="aesthetic score", head=head.source or head.kind)
    return AestheticResult(scores, head.describe(), model.vision.config.name, invalid=invalid)
