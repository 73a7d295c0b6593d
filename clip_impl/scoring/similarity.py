"""Image-text similarity (CLIPScore) with a loaded CLIP: image and text embeddings, scales, a report.

- Image embeddings: preprocessed pixels (``preprocess.py``) through the vision tower and its projection,
  L2-normalised.
- Text embeddings: the projected pooled vector of the text tower paired with the vision tower (its final
  layer after LayerNorm at the first EOS), L2-normalised. The prompt is scored as the words the user meant
  (DESIGN 3): weighting syntax, BREAK and ``embedding:`` references are removed, and it is truncated to
  75 tokens (77 with start and end), with a note when that cuts words off. Cached per prompt; many prompts
  (zero-shot labels) are encoded in batches that stop at the longest prompt's EOS.
- Scales: ``clipscore_100`` = max(100 cos, 0) (torchmetrics' CLIPScore, per image), ``clipscore_2_5`` =
  2.5 max(cos, 0) (the CLIPScore paper), ``cosine`` = cos (HPS v2's score), ``logit`` = exp(logit_scale) cos,
  the model's own logit (PickScore's score; transformers' ``logits_per_image``). On ``logit`` the report
  adds, per prompt, the softmax of the batch's logits: PickScore's probability that each image is picked.
  A text encoder + clip_vision pair has no logit_scale: its ``logit`` uses 100 (CLIP's trained value,
  clamped there in training) and says so in a note.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Literal, get_args

import torch
import torch.nn.functional as F

from ..cache import ByteLRUCache
from ..model import ClipModel
from ..images.preprocess import check_image_batch, preprocess_images
from ..text.syntax import parse_prompt
from ..tokenizer import BOS_ID, EOS_ID, get_tokenizer
from .finite import not_finite_reasons

Scale = Literal["clipscore_100", "clipscore_2_5", "cosine", "logit"]
SCALES: tuple[Scale, ...] = get_args(Scale)
MAX_PROMPT_TOKENS = 75
TEXT_CACHE = ByteLRUCache(32 * 1024 * 1024)  # (tower, token ids) -> normalised text embedding (P,)
# ComfyUI embedding references: a word starting with "embedding:" (up to a space or comma).
_EMBEDDING_REF = re.compile(r"(?<![^\s,])embedding:[^\s,]+")
_SPACES = re.compile(r"\s+")
_WORD = re.compile(r"[^\s!-/:-@\[-`{-~]")  # anything but whitespace and ASCII punctuation (emoji count)
_SPACE_BEFORE_PUNCT = re.compile(r" ([,.;:!?])")  # "in , snow" (a removed reference) -> "in, snow"


@dataclass(frozen=True)
class ScoringPrompt:
    """A prompt as scored: the cleaned text, its token ids (no BOS/EOS), and notes."""

    text: str  # as given
    cleaned: str  # without weighting syntax, BREAK and embedding references
    ids: tuple[int, ...]  # at most MAX_PROMPT_TOKENS
    notes: tuple[str, ...] = ()
    truncated: bool = False  # cut to MAX_PROMPT_TOKENS (the end-of-text token is always kept after them)


def prepare_prompt(text: str, syntax: str = "comfy") -> ScoringPrompt:
    """Clean ``text`` for scoring (``syntax``: comfy, a1111 or none) and tokenize it, truncated to 75 tokens.

    Raises ValueError when nothing is left to score (an empty prompt, or only syntax and embeddings).
    """
    segments = parse_prompt(text, syntax)
    words = " ".join(_EMBEDDING_REF.sub(" ", seg.text) for seg in segments if not seg.is_break)
    cleaned = _SPACE_BEFORE_PUNCT.sub(r"\1", _SPACES.sub(" ", words)).strip()
    if not _WORD.search(cleaned):  # nothing but punctuation left (e.g. "embedding:a, embedding:b")
        raise ValueError(
            f"prompt {text[:60]!r} has no words to score (empty, or only weighting syntax, BREAK and embeddings)"
        )
    ids = get_tokenizer().encode(cleaned)
    notes = []
    if len(ids) > MAX_PROMPT_TOKENS:
        kept = get_tokenizer().decode(ids[:MAX_PROMPT_TOKENS]).strip()
        notes.append(
            f"prompt truncated to {MAX_PROMPT_TOKENS} of its {len(ids)} tokens for scoring (CLIP reads 77 with "
            f"start and end); scored up to: ...{kept[-40:]}"
        )
    # Truncation keeps the end-of-text token: text_embedding appends EOS after the kept ids, and the pooled
    # vector is read there (torchmetrics' bug 2883 cut the EOS off and the score collapsed).
    return ScoringPrompt(
        text, cleaned, tuple(ids[:MAX_PROMPT_TOKENS]), tuple(notes), truncated=len(ids) > MAX_PROMPT_TOKENS
    )


def scoring_towers(model: ClipModel):
    """(text tower, vision tower) that score together; ValueError when the model cannot score."""
    if model.vision is None:
        raise ValueError(
            f"{', '.join(model.sources) or 'this model'} has no vision tower, so it cannot score images: load a "
            "full CLIP, or pair the text encoder with the clip_vision file of the same CLIP (model_2)"
        )
    vision = model.vision
    role = model.extra.get("vision_text")
    if role is None:  # a bundle built by hand: the text tower whose projection matches
        dim = vision.config.projection_dim
        role = next((r for r, t in model.towers.items() if t.config.projection_dim == dim), None)
    tower = model.towers.get(role)
    if tower is None or tower.text_projection is None:
        raise ValueError(
            f"{', '.join(model.sources)}: no text encoder with a text_projection pairs with the vision tower; "
            "SD checkpoints drop CLIP-L's text_projection: use a standalone text encoder that keeps it or a full CLIP"
        )
    return tower, vision


def text_embedding(model: ClipModel, prompt: ScoringPrompt, cache: ByteLRUCache | None = TEXT_CACHE) -> torch.Tensor:
    """The L2-normalised projected text embedding (P,) float32 of a prepared prompt (the cached tensor itself
    when the prompt's words were embedded before)."""
    tower, _ = scoring_towers(model)
    key = (tower.cache_id, prompt.ids)
    hit = cache.get(key) if cache is not None else None
    if hit is not None:
        return hit.to(tower.device)
    emb = token_embeddings(model, [prompt.ids], None, 1)[0]  # a row whose storage is that row alone
    if cache is not None:
        cache.put(key, emb.cpu())
    return emb


def text_embeddings(
    model: ClipModel, prompts: list[ScoringPrompt], cache: ByteLRUCache | None = TEXT_CACHE, batch_size: int = 32
) -> torch.Tensor:
    """L2-normalised projected text embeddings (N, P) float32 of prepared prompts, in order.

    Cached per (text tower, token ids): prompts found in ``cache`` are not encoded again; the others are
    encoded ``batch_size`` rows at a time (each row is its own 77-token sequence, so batching changes
    nothing but speed).
    """
    if not prompts:
        raise ValueError("no prompts to embed")
    return token_embeddings(model, [p.ids for p in prompts], cache, batch_size)


def token_embeddings(
    model: ClipModel, ids: list[tuple[int, ...]], cache: ByteLRUCache | None = TEXT_CACHE, batch_size: int = 32
) -> torch.Tensor:
    """``text_embeddings`` from the token ids of prepared prompts (``ScoringPrompt.ids``): (N, P) float32.

    Every row lands in one tensor allocated once: many small long-lived tensors made while a forward
    pass's buffers are alive pin the heap between them (tens of KB per row: 200,000 labels took 7 GB).
    Cache entries are copied out after the last forward pass, for the same reason.
    """
    if not ids:
        raise ValueError("no prompts to embed")
    tower, _ = scoring_towers(model)
    slots = {key: i for i, key in enumerate(dict.fromkeys((tower.cache_id, tuple(row)) for row in ids))}
    out: torch.Tensor | None = None
    missing = []
    for key, i in slots.items():
        hit = cache.get(key) if cache is not None else None
        if hit is None:
            missing.append(key)
            continue
        if out is None:
            out = torch.empty(len(slots), hit.shape[-1])
        out[i] = hit
    batches = sorted(missing, key=lambda key: len(key[1]))  # like lengths together: less padding per batch
    for start in range(0, len(batches), batch_size):
        part = batches[start : start + batch_size]
        # Only the pooled vector is used, at each row's first EOS, and attention is causal: positions after
        # the longest row's EOS change nothing, so the batch stops there ("a dog" runs 4 positions, not 77).
        width = max(len(key[1]) for key in part) + 2
        rows = []
        for _, row_ids in part:
            row = [BOS_ID, *row_ids, EOS_ID]
            rows.append(row + [tower.config.pad_id] * (width - len(row)))
        with torch.inference_mode():
            pooled = tower(torch.tensor(rows, dtype=torch.long), tower.config.layers, layer_norm_hidden=False,
                           project=True).pooled
        emb = F.normalize(pooled.float(), dim=-1).cpu()
        if out is None:
            out = torch.empty(len(slots), emb.shape[-1])
        out[torch.tensor([slots[key] for key in part])] = emb
    if cache is not None and missing:
        fits = max(0, cache.max_bytes // (out.shape[1] * out.element_size()))  # more would evict themselves
        for key in missing[-fits:] if fits else []:
            cache.put(key, out[slots[key]].clone())  # a row of its own: a cache entry keeps nothing else alive
    order = [slots[(tower.cache_id, tuple(row))] for row in ids]
    if order != list(range(len(slots))):
        out = out[torch.tensor(order)]
    return out.to(tower.device)


def image_embeddings(model: ClipModel, images: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
    """ComfyUI IMAGE [B, H, W, C] (0..1) -> L2-normalised image embeddings (B, P) float32."""
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}; use 1 or more")
    _, vision = scoring_towers(model)
    images = check_image_batch(images)  # the whole batch, so a bad image fails before any work
    out = []
    for start in range(0, images.shape[0], batch_size):
        part = images[start : start + batch_size]
        pixels = preprocess_images(part, vision.config.image_size, vision.device, vision.compute_dtype)
        out.append(pixel_embeddings(vision, pixels))
    return torch.cat(out)


def pixel_embeddings(vision, pixels: torch.Tensor) -> torch.Tensor:
    """Preprocessed pixels (B, 3, S, S) -> L2-normalised image embeddings (B, P) float32."""
    with torch.inference_mode():
        return F.normalize(vision(pixels).float(), dim=-1)


DEFAULT_LOGIT_FACTOR = 100.0  # CLIP's trained temperature clamps at 100; used when a file has no logit_scale


def logit_factor(model: ClipModel) -> tuple[float, str]:
    """(factor on cosines that gives CLIP's logits, where it came from): ``exp(logit_scale)`` from a full
    CLIP's file (PickScore's score, zero-shot logits), else 100 (a text encoder + clip_vision pair)."""
    if model.logit_scale is None:
        return DEFAULT_LOGIT_FACTOR, "100 (the files hold no logit_scale)"
    factor = math.exp(model.logit_scale)
    return factor, f"{factor:.4g} (the model's logit_scale)"


def apply_scale(cosines: torch.Tensor, scale: Scale, factor: float = DEFAULT_LOGIT_FACTOR) -> torch.Tensor:
    """Cosine similarities -> scores on ``scale`` (see the module docstring); ``factor``: the ``logit``
    scale's factor on cosines (``logit_factor(model)[0]``)."""
    if scale == "logit":
        return factor * cosines
    if scale == "clipscore_100":
        return (100.0 * cosines).clamp(min=0.0)
    if scale == "clipscore_2_5":
        return 2.5 * cosines.clamp(min=0.0)
    if scale == "cosine":
        return cosines
    raise ValueError(f"scale={scale!r}; use one of {', '.join(SCALES)}")


@dataclass
class SimilarityResult:
    """Per-image scores (batch order), their raw cosines, mean and the best image. ``invalid``: index ->
    why, for the scores that are NaN or infinite (never a score: the summary and the best image leave them
    out, see ``finite.py``)."""

    scores: list[float]
    cosines: list[float]
    scale: Scale
    prompt: ScoringPrompt
    model: str = ""
    notes: list[str] = field(default_factory=list)
    invalid: dict[int, str] = field(default_factory=dict)

    @property
    def finite(self) -> list[int]:
        """The indexes of the finite scores, in batch order."""
        return [i for i in range(len(self.scores)) if i not in self.invalid]

    @property
    def probabilities(self) -> list[float] | None:
        """On the ``logit`` scale, the softmax of the batch's logits (PickScore's probability of each image
        being picked among these candidates); None on the other scales."""
        if self.scale != "logit":
            return None
        return torch.softmax(torch.tensor(self.scores, dtype=torch.float64), dim=0).tolist()

    @property
    def mean(self) -> float:
        """The mean of the finite scores (NaN when there is none)."""
        values = [self.scores[i] for i in self.finite]
        return sum(values) / len(values) if values else math.nan

    @property
    def best_index(self) -> int:
        """Index of the best image (by cosine, so ties among scores clamped to 0 still rank; first on ties;
        finite scores only, 0 when there is none)."""
        return max(self.finite, key=lambda i: (self.cosines[i], -i), default=0)

    @property
    def report(self) -> str:
        """A few lines for people: prompt, summary, one line per image, notes."""
        n, best = len(self.scores), self.best_index
        shown = self.prompt.cleaned if len(self.prompt.cleaned) <= 80 else self.prompt.cleaned[:77] + "..."
        values = [self.scores[i] for i in self.finite]
        lines = [f"CLIP score ({self.scale}{', ' + self.model if self.model else ''}) for \"{shown}\""]
        if values:
            lines.append(
                f"{n} image{'s' if n != 1 else ''}: mean {self.mean:.4f}, min {min(values):.4f}, "
                f"max {max(values):.4f}, best #{best}" + (f"; {len(self.invalid)} not finite" if self.invalid else "")
            )
        else:
            lines.append(f"{n} image{'s' if n != 1 else ''}: no finite score")
        probs = (self.probabilities if not self.invalid else None) or [None] * n
        lines += [
            f"  #{i}: {self.invalid[i]}" if i in self.invalid else
            f"  #{i}: {s:.4f} (cosine {c:+.4f}" + (f", softmax {p:.4f})" if p is not None else ")")
            for i, (s, c, p) in enumerate(zip(self.scores, self.cosines, probs))
        ]
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


def score_images(
    model: ClipModel,
    images: torch.Tensor,
    text: str,
    scale: Scale = "clipscore_100",
    syntax: str = "comfy",
    batch_size: int = 8,
    cache: ByteLRUCache | None = TEXT_CACHE,
) -> SimilarityResult:
    """Score every image of an IMAGE batch [B, H, W, C] against ``text``."""
    apply_scale(torch.zeros(1), scale)  # refuse a bad scale before any work
    prompt = prepare_prompt(text, syntax)
    txt = text_embedding(model, prompt, cache)
    img = image_embeddings(model, images, batch_size)
    cos = img @ txt.to(img.device)
    factor, where = logit_factor(model)
    notes = list(prompt.notes)
    if scale == "logit":
        notes.append(f"logit = {where} x cosine; softmax over the batch = the probability of each image being picked")
        if model.logit_scale is None:
            notes.append(
                "this text encoder + clip_vision pair holds no logit_scale: 100 is used (CLIP's trained value); "
                "load a full CLIP file (e.g. PickScore) for its own factor"
            )
    scores = apply_scale(cos.float(), scale, factor).tolist()
    invalid = not_finite_reasons(scores, img, text=txt)
    return SimilarityResult(scores, cos.tolist(), scale, prompt, model.vision.config.name, notes, invalid)
