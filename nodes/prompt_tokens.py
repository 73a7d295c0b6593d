"""``ClipSuitePromptTokens``: how a prompt splits into 77-token chunks (no model needed)."""

from __future__ import annotations

from typing import Literal

from ..clip_impl.text import WEIGHTINGS, Chunking, Weighting, describe_chunks, prompt_chunks
from ..clip_impl.tokenizer import get_tokenizer
from . import common, host

AutoWeighting = Literal["auto"]
AUTO_WEIGHTING: AutoWeighting = "auto"  # the weighting that goes with the chunking (comfy -> comfy, a1111 -> a1111)
WEIGHTING_TOOLTIP = (
    "The weighting the encoder uses (its syntax decides how brackets and embeddings are read). auto: the one "
    "that goes with chunking (comfy chunking: comfy weighting; a1111 chunking: a1111 weighting)."
)


def token_report(
    text: str,
    chunking: Chunking = "comfy",
    comma_backtrack: int = 20,
    embeddings=None,
    weighting: Weighting | AutoWeighting = AUTO_WEIGHTING,
) -> str:
    """Counts per chunk, where each chunk ends, and its tokens (word pieces, weights other than 1 shown).

    ``embeddings`` (an EmbeddingLibrary, optional): embedding references count as their vectors.
    ``weighting``: the encoder's weighting mode, or ``auto`` for the one that goes with ``chunking``.
    """
    if weighting == AUTO_WEIGHTING:
        weighting = chunking
    chunks = prompt_chunks(
        text, chunking=chunking, comma_backtrack=comma_backtrack, weighting=weighting, embeddings=embeddings
    ).chunks
    info = describe_chunks(chunks)
    tok = get_tokenizer()
    chunk_word = "chunk" if info["chunks"] == 1 else "chunks"
    lines = [f"{info['tokens']} tokens, {info['chunks']} {chunk_word} ({chunking} chunking)"]
    for i, (chunk, n, tail) in enumerate(zip(chunks, info["chunk_tokens"], info["boundaries"]), 1):
        lines.append(f"chunk {i}: {n}/75 tokens, ends with: ...{tail}")
        pieces = [
            (f"<{t.embedding.name} {t.index + 1}/{t.embedding.length}>" if t.embedding is not None
             else tok.token_text(t.id).strip())
            + ("" if t.weight == 1.0 else f":{t.weight:g}")
            for t in chunk.body
        ]
        lines.append("  " + " | ".join(pieces))
    return "\n".join(lines)


class ClipSuitePromptTokens:
    """Prompt Tokens (CLIP Suite): token counts and chunk boundaries of a prompt."""

    DESCRIPTION = (
        "Shows how a prompt is tokenized and cut into 77-token chunks (75 prompt tokens each): the token count, "
        "each chunk's tokens and where it ends. Same rules as the CLIP Suite encoders; no model needed. An "
        "embedding from the embeddings folder counts as its number of vectors."
    )
    CATEGORY = common.CATEGORY
    RETURN_TYPES, RETURN_NAMES, OUTPUT_TOOLTIPS, OUTPUT_IS_LIST = common.declare_outputs(
        common.report_output("The report: chunks with their tokens and counts (one line per chunk, then its tokens)."),
    )
    FUNCTION = "report"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "text": common.text_input("The prompt to analyse (weights and BREAK as the encoders read them)."),
                **common.chunking_inputs(),
            },
            "optional": {
                "weighting": ([AUTO_WEIGHTING, *WEIGHTINGS], {"default": AUTO_WEIGHTING, "tooltip": WEIGHTING_TOOLTIP}),
            },
        }

    def report(self, text, chunking, comma_backtrack, weighting=AUTO_WEIGHTING):
        report = token_report(text, chunking, comma_backtrack, host.get_host().embedding_library(), weighting)
        return {"ui": {"text": [report]}, "result": (report,)}
