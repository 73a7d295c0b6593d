"""Scores that are not numbers: which ones, and why.

Inputs are checked (images for NaN and range, weights for NaN/inf when loaded), yet a score can still come
out NaN or infinite: a model whose finite weights overflow float32 (or fp16) on some image, or an aesthetic
head whose weights are finite but huge. Such a score is no score: it never passes a threshold (a comparison
with NaN is always false, so ``score < threshold`` would let it through) and every report says which
images got one and why, from what is finite on the way (the image embedding, the text embedding, the head).
"""

from __future__ import annotations

import math

import torch

MODEL_FIX = "load the model with precision fp32, or use another model file"


def describe_value(value: float) -> str:
    """``nan``, ``inf`` or ``-inf`` (a finite value as %g)."""
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else f"{value:g}"


def not_finite_reasons(
    values, embeds: torch.Tensor, *, what: str = "score", text: torch.Tensor | None = None, head: str | None = None
) -> dict[int, str]:
    """For each index of ``values`` (scores, batch order) that is NaN or infinite, why: ``embeds`` are the
    images' embeddings (B, P), ``text`` the prompt's embedding, ``head`` the aesthetic head's name when the
    values are its scores. An empty dict when every value is finite (nothing else is computed then)."""
    bad = [i for i, v in enumerate(values) if not math.isfinite(v)]
    if not bad:
        return {}
    rows_ok = torch.isfinite(embeds.float()).all(dim=-1).tolist()
    text_ok = text is None or bool(torch.isfinite(text.float()).all())
    out = {}
    for i in bad:
        if not rows_ok[i]:
            why = ("the image embedding holds NaN or infinite values (the model's numbers overflowed, or its "
                   f"weights are broken): {MODEL_FIX}")
        elif not text_ok:
            why = ("the prompt's text embedding holds NaN or infinite values (the model's numbers overflowed, or its "
                   f"weights are broken): {MODEL_FIX}")
        elif head is not None:
            why = (f"the aesthetic head {head} overflowed float32 on this image's (finite) embedding: its weights "
                   "are far too large, the head file is broken; get it again")
        else:
            why = "the score overflowed float32 (the model's logit scale is too large?); use the cosine scale"
        out[i] = f"{what} is not finite ({describe_value(values[i])}): {why}"
    return out

