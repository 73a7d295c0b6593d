"""Prompt -> chunks: the one pipeline that the encoders, the CLI, the web route, the Prompt Tokens node and
scoring all call, so that the same settings give the same chunks everywhere.

The weighting mode decides the bracket syntax (and with it how embeddings are referenced: ``embedding:name``
in ComfyUI and plain syntax, bare file names in A1111 syntax); the chunking mode decides the packing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

from .chunking import CHUNKINGS, Chunking, TokenChunk, chunk_prompt

Weighting = Literal["comfy", "a1111", "a1111_no_norm", "none"]
WEIGHTINGS: tuple[Weighting, ...] = get_args(Weighting)
# weighting mode -> the bracket syntax its prompts are written in (DESIGN 4, Weighting)
WEIGHTING_SYNTAX: dict[Weighting, str] = {"comfy": "comfy", "a1111": "a1111", "a1111_no_norm": "a1111", "none": "none"}


def weighting_syntax(weighting: Weighting) -> str:
    """The syntax (``comfy``, ``a1111``, ``none``) that a weighting mode's prompts are parsed with."""
    try:
        return WEIGHTING_SYNTAX[weighting]
    except KeyError:
        raise ValueError(f"weighting={weighting!r}; use one of {', '.join(WEIGHTINGS)}") from None


@dataclass
class PromptChunks:
    """A prompt cut into chunks for one tower, and what the embedding lookup had to say about it."""

    chunks: list[TokenChunk]
    warnings: list[str] = field(default_factory=list)


def prompt_chunks(
    text: str,
    *,
    chunking: Chunking = "comfy",
    comma_backtrack: int = 20,
    weighting: Weighting = "comfy",
    embeddings=None,
    tower: str = "l",
    width: int | None = None,
) -> PromptChunks:
    """Parse, tokenize and pack ``text`` for one tower (``tower``: "l", "g" or "h"; ``width``: its width,
    or None when no model is at hand, e.g. the token counter).

    ``embeddings``: an EmbeddingLibrary (or None: references are left out with a warning, as ComfyUI does
    without the file). Returns the chunks (each 75 prompt tokens at most) and the embedding warnings.
    """
    if chunking not in CHUNKINGS:
        raise ValueError(f"chunking={chunking!r}; use one of {', '.join(CHUNKINGS)}")
    syntax = weighting_syntax(weighting)
    resolver = embeddings.resolver(tower, syntax, width) if embeddings is not None else None
    chunks = chunk_prompt(
        text, syntax=syntax, chunking=chunking, comma_backtrack=comma_backtrack, resolve_embedding=resolver
    )
    return PromptChunks(chunks, list(getattr(resolver, "warnings", ())))
