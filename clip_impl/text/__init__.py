"""From prompt text to conditioning: the weighting syntaxes (ComfyUI, A1111, none) and BREAK, chunking into
77-token windows (ComfyUI's packing or A1111's comma backtrack), the one prompt pipeline every caller uses
(:func:`prompt_chunks`), textual-inversion embeddings, and :func:`encode_prompt` on a model's towers.
"""

from .chunking import (
    CHUNKINGS, MAX_COMMA_BACKTRACK, Chunking, PromptToken, TokenChunk, chunk_prompt, describe_chunks,
)
from .embeddings import EmbeddingLibrary
from .encode import (
    EMPTY_PROMPT_MODES, POOLED_MODES, EmptyPromptMode, EncodedText, EncodeSettings, PooledMode, encode_prompt,
)
from .pipeline import WEIGHTINGS, PromptChunks, Weighting, prompt_chunks, weighting_syntax
from .syntax import BREAK, Segment, parse_prompt

__all__ = [
    "CHUNKINGS", "Chunking", "MAX_COMMA_BACKTRACK", "PromptToken", "TokenChunk", "chunk_prompt", "describe_chunks",
    "EmbeddingLibrary", "EMPTY_PROMPT_MODES", "EmptyPromptMode", "POOLED_MODES", "PooledMode", "EncodedText",
    "EncodeSettings", "encode_prompt",
    "WEIGHTINGS", "Weighting", "PromptChunks", "prompt_chunks", "weighting_syntax", "BREAK", "Segment", "parse_prompt",
]
