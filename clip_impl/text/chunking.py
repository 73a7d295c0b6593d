"""Split a parsed prompt into CLIP's 77-token chunks: [BOS] + up to 75 prompt tokens + [EOS] + padding.

Two packing rules (``CHUNKINGS``):

- ``comfy``: ComfyUI's ``SDTokenizer.tokenize_with_weights`` packing. Each weighted segment is
  tokenized whole (split only before ``embedding:`` references); a group of 8 or more tokens that does
  not fit is cut exactly at the chunk edge, a shorter one moves whole to the next chunk. A reference to
  an embedding that is not found (or any reference, when no embedding library is given) is dropped with
  a warning and the text after its name is kept, as ComfyUI does (it always has an embeddings folder).
  An embedding in a group follows its group (ComfyUI makes each ``embedding:`` reference its own group).
- ``a1111``: AUTOMATIC1111's ``tokenize_line``. When a chunk is full and the next token is not a comma,
  the tokens after the chunk's last comma move to the next chunk if that comma is at most
  ``comma_backtrack`` tokens back (0 disables it); embeddings are never split.

Embedding references follow the weighting syntax, whichever packing is used: ``embedding:name`` in
ComfyUI (and plain) syntax, bare words that name an embedding file in A1111 syntax.

BREAK closes the current chunk in both (even an empty one: a leading BREAK makes an empty chunk), and a
prompt always has at least one chunk. CLIP-L pads with EOS, OpenCLIP towers with 0 (``pad_id``).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Literal, get_args

from .syntax import Segment, parse_prompt
from ..tokenizer import BOS_ID, COMMA_ID, EOS_ID, ClipTokenizer, get_tokenizer

Chunking = Literal["comfy", "a1111"]
CHUNKINGS: tuple[Chunking, ...] = get_args(Chunking)
CHUNK_LENGTH = 77
BODY_LENGTH = CHUNK_LENGTH - 2
COMFY_MAX_WORD_LENGTH = 8  # ComfyUI's SDTokenizer.max_word_length
MAX_COMMA_BACKTRACK = BODY_LENGTH - 1
_EMBEDDING_SPLIT = re.compile(r" embedding:|\nembedding:")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PromptToken:
    """One position of a chunk body: a token id, or vector ``index`` of an embedding (``id`` is then 0)."""

    id: int
    weight: float = 1.0
    embedding: object | None = None  # an Embedding (see embeddings.py), None for vocabulary tokens
    index: int = 0


@dataclass
class TokenChunk:
    """A chunk as the text tower sees it: 77 ids and 77 weights (1.0 on BOS, EOS and padding)."""

    body: list[PromptToken] = field(default_factory=list)

    def ids(self, pad_id: int = EOS_ID) -> list[int]:
        """[BOS] + body + [EOS] + pad_id * n, 77 ids."""
        out = [BOS_ID] + [t.id for t in self.body] + [EOS_ID]
        return out + [pad_id] * (CHUNK_LENGTH - len(out))

    def weights(self) -> list[float]:
        """77 weights aligned with :meth:`ids`."""
        out = [1.0] + [t.weight for t in self.body] + [1.0]
        return out + [1.0] * (CHUNK_LENGTH - len(out))

    def embeddings(self) -> list[tuple[int, PromptToken]]:
        """(position in the 77, token) for every embedding vector in the chunk."""
        return [(i + 1, t) for i, t in enumerate(self.body) if t.embedding is not None]

    def key(self, pad_id: int = EOS_ID) -> tuple:
        """Hashable identity of what the tower sees (ids, padding and embedding vectors; not weights)."""
        vectors = tuple((pos, t.embedding.key, t.index) for pos, t in self.embeddings())
        return (tuple(self.ids(pad_id)), vectors)


def unknown_embedding_comfy(reference: str, warn: bool = True) -> tuple[None, str]:
    """What ComfyUI keeps of ``embedding:<reference>`` when no such embedding exists: (None, leftover).

    The name is the first word and is dropped; the rest of the text is tokenized. When the name carries
    commas ComfyUI retries without them and keeps ``name[len(stripped name):]`` (the commas for
    ``foo,``; for ``,foo`` its last character) in front of the leftover; we keep that quirk bit for bit
    (``comfy/sd1_clip.py`` ``SDTokenizer._try_get_embedding``). A reference with no name (on which
    ComfyUI fails) stays plain text. ``warn=False``: the caller has already said why (e.g. an unreadable file).
    """
    words = reference.split()
    if not words:
        return None, "embedding:" + reference
    name, leftover = words[0], " ".join(words[1:])
    if warn:
        log.warning("embedding:%s not found; ignoring it", name)
    stripped = name.strip(",")
    if len(stripped) < len(name):
        leftover = f"{name[len(stripped):]} {leftover}"
    return None, leftover


def _embedding_tokens(embedding, weight: float) -> list[PromptToken]:
    return [PromptToken(0, weight, embedding, i) for i in range(embedding.length)]


def tokenize_segments(
    segments: list[Segment],
    references: str,
    tokenizer: ClipTokenizer,
    resolve_embedding=None,
) -> list[list[PromptToken] | None]:
    """Tokenize segments into groups (``None`` marks a BREAK).

    ``references`` is the embedding reference rule: ``comfy`` splits a segment before each
    ``embedding:`` reference, as ComfyUI does; ``a1111`` keeps each run whole (bare words name embeddings). ``resolve_embedding(word, mode)`` (optional) turns references into embeddings; it
    returns (embedding or None, leftover text) in comfy mode (for a name it does not know, what
    :func:`unknown_embedding_comfy` returns), or a list of PromptTokens in a1111 mode. Without it, every
    comfy-mode reference is unknown.
    """
    texts: list[tuple[str, float]] = []
    order: list[object] = []
    for seg in segments:
        if seg.is_break:
            order.append(None)
            continue
        if references == "comfy":
            pieces = _EMBEDDING_SPLIT.split(seg.text)
            pieces = pieces[:1] + ["embedding:" + p for p in pieces[1:]]
            for piece in (p for p in pieces if p):
                if piece.startswith("embedding:"):
                    reference = piece[len("embedding:") :]
                    if resolve_embedding is None:
                        embedding, piece = unknown_embedding_comfy(reference)
                    else:
                        embedding, piece = resolve_embedding(reference, "comfy")
                    if embedding is not None:
                        order.append(_embedding_tokens(embedding, seg.weight))
                        if not piece:
                            continue
                order.append(len(texts))
                texts.append((piece, seg.weight))
        else:
            order.append(len(texts))
            texts.append((seg.text, seg.weight))
    ids = tokenizer.encode_batch([t for t, _ in texts])
    groups: list[list[PromptToken] | None] = []
    for item in order:
        if item is None or isinstance(item, list):
            groups.append(item)
            continue
        weight = texts[item][1]
        tokens = [PromptToken(i, weight) for i in ids[item]]
        if resolve_embedding is not None and references == "a1111":
            tokens = resolve_embedding(tokens, "a1111")
        groups.append(tokens)
    return groups


def pack_comfy(groups: list[list[PromptToken] | None]) -> list[TokenChunk]:
    """ComfyUI's packing: groups of 8+ tokens split at the edge, shorter ones move whole."""
    chunks = [TokenChunk()]
    for group in groups:
        if group is None:
            chunks.append(TokenChunk())
            continue
        is_large = len(group) >= COMFY_MAX_WORD_LENGTH
        pos = 0  # what is left of the group is group[pos:]; an index, not a copy per chunk (linear time)
        while pos < len(group):
            body = chunks[-1].body
            room = BODY_LENGTH - len(body)
            if len(group) - pos <= room:
                body.extend(group[pos:])
                break
            if is_large:
                body.extend(group[pos : pos + room])
                pos += room
            chunks.append(TokenChunk())
    # Only a BREAK opens a chunk that nothing follows: a trailing BREAK adds nothing, as in A1111.
    if len(chunks) > 1 and not chunks[-1].body:
        chunks.pop()
    return chunks


def pack_a1111(groups: list[list[PromptToken] | None], comma_backtrack: int = 20) -> list[TokenChunk]:
    """A1111's ``tokenize_line`` packing with comma backtrack (0 turns it off)."""
    if not 0 <= comma_backtrack <= MAX_COMMA_BACKTRACK:
        raise ValueError(f"comma_backtrack={comma_backtrack} is out of range; use 0..{MAX_COMMA_BACKTRACK}")
    chunks: list[TokenChunk] = []
    body: list[PromptToken] = []
    last_comma = -1

    def close() -> None:
        nonlocal body, last_comma
        chunks.append(TokenChunk(body))
        body, last_comma = [], -1

    for group in groups:
        if group is None:
            close()
            continue
        pos = 0
        while pos < len(group):
            token = group[pos]
            if token.embedding is None and token.id == COMMA_ID:
                last_comma = len(body)
            elif (
                comma_backtrack
                and len(body) == BODY_LENGTH
                and last_comma != -1
                and BODY_LENGTH - last_comma <= comma_backtrack
            ):
                moved = body[last_comma + 1 :]
                body = body[: last_comma + 1]
                close()
                body = moved
            if len(body) == BODY_LENGTH:
                close()
            if token.embedding is not None and token.index == 0:
                size = token.embedding.length
                if len(body) + size > BODY_LENGTH:
                    close()
                body.extend(group[pos : pos + size])
                pos += size
                continue
            body.append(token)
            pos += 1
    if body or not chunks:
        close()
    return chunks


def chunk_prompt(
    text: str,
    *,
    syntax: str = "comfy",
    chunking: Chunking = "comfy",
    comma_backtrack: int = 20,
    tokenizer: ClipTokenizer | None = None,
    resolve_embedding=None,
) -> list[TokenChunk]:
    """Parse, tokenize and pack a prompt into chunks (at least one)."""
    if chunking not in CHUNKINGS:
        raise ValueError(f"unknown chunking {chunking!r}; use one of {', '.join(CHUNKINGS)}")
    tokenizer = tokenizer or get_tokenizer()
    # Embedding references follow the weighting syntax, not the packing: A1111 prompts name embeddings by
    # bare words, ComfyUI (and plain-text) prompts with ``embedding:name`` (EmbeddingLibrary.resolver).
    references = "a1111" if syntax == "a1111" else "comfy"
    groups = tokenize_segments(parse_prompt(text, syntax), references, tokenizer, resolve_embedding)
    chunks = pack_comfy(groups) if chunking == "comfy" else pack_a1111(groups, comma_backtrack)
    # An embedding too wide or narrow for the tower keeps its place in the packing but is then left
    # out, the rest of its chunk moving up (ComfyUI's SDClipModel.process_tokens does the same).
    for chunk in chunks:
        chunk.body = [t for t in chunk.body if t.embedding is None or t.embedding.vectors is not None]
    return chunks


def describe_chunks(chunks: list[TokenChunk], tokenizer: ClipTokenizer | None = None, words: int = 4) -> dict:
    """The token report shared by the CLI, the web route and the node.

    Returns ``{"tokens": prompt tokens (no BOS/EOS/padding/BREAK; an embedding counts its vectors),
    "chunks": n, "chunk_tokens": [per chunk], "boundaries": [last few words of each chunk]}``.
    """
    tokenizer = tokenizer or get_tokenizer()
    counts = [len(c.body) for c in chunks]
    boundaries = []
    for chunk in chunks:
        tail = chunk.body[-3 * words :]
        ids = [t.id for t in tail if t.embedding is None]
        text = tokenizer.decode(ids).split()
        boundaries.append(" ".join(text[-words:]))
    return {"tokens": sum(counts), "chunks": len(chunks), "chunk_tokens": counts, "boundaries": boundaries}
