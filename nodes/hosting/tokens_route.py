"""The web extension's tokenizer route: ``POST /clip_suite/tokens``.

Request: JSON ``{"text": str, "chunking": "comfy"|"a1111", "comma_backtrack": 0..74, "weighting": ...}``
(defaults comfy, 20, comfy). Answer: the same object as ``python -m clip_suite tokens --json``
(``tokens``, ``chunks``, ``chunk_tokens``, ``boundaries``), computed by the pack's own tokenizer and chunker.
Bad requests get 400 (413 when too large) with ``{"error": message}``. The route only tokenizes text: it
reads no files except the embeddings folder's names and vectors counts, and bounds the input size.

``host.py`` registers :func:`handle_tokens` on ComfyUI's server; everything here runs without ComfyUI.
"""

from __future__ import annotations

import json
import logging

from ...clip_impl.chunking import CHUNKINGS, MAX_COMMA_BACKTRACK, describe_chunks
from ...clip_impl.prompt import WEIGHTINGS, prompt_chunks

log = logging.getLogger(__name__)

ROUTE = "/clip_suite/tokens"
MAX_BODY_BYTES = 256 * 1024
MAX_TEXT_CHARS = 100_000


class RequestError(ValueError):
    """A request the route refuses: ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def parse_request(body: bytes) -> dict:
    """Validate a request body; returns the settings with defaults filled in."""
    if len(body) > MAX_BODY_BYTES:
        raise RequestError(413, f"request body is {len(body)} bytes; the limit is {MAX_BODY_BYTES}")
    try:
        payload = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise RequestError(400, f"request body is not JSON ({e})") from e
    if not isinstance(payload, dict):
        raise RequestError(400, "request body must be a JSON object with a 'text' field")
    text = payload.get("text", "")
    if not isinstance(text, str):
        raise RequestError(400, "'text' must be a string")
    if len(text) > MAX_TEXT_CHARS:
        raise RequestError(413, f"'text' has {len(text)} characters; the limit is {MAX_TEXT_CHARS}")
    chunking = payload.get("chunking", "comfy")
    if chunking not in CHUNKINGS:
        raise RequestError(400, f"'chunking' must be one of {', '.join(CHUNKINGS)}, not {chunking!r}")
    weighting = payload.get("weighting", "comfy")
    if weighting not in WEIGHTINGS:
        raise RequestError(400, f"'weighting' must be one of {', '.join(WEIGHTINGS)}, not {weighting!r}")
    backtrack = payload.get("comma_backtrack", 20)
    if isinstance(backtrack, bool) or not isinstance(backtrack, int) or not 0 <= backtrack <= MAX_COMMA_BACKTRACK:
        raise RequestError(400, f"'comma_backtrack' must be an integer 0..{MAX_COMMA_BACKTRACK}, not {backtrack!r}")
    return {"text": text, "chunking": chunking, "comma_backtrack": backtrack, "weighting": weighting}


def tokens_report(request: dict, embeddings=None) -> dict:
    """The token report for validated settings (see module docstring)."""
    found = prompt_chunks(
        request["text"],
        chunking=request["chunking"],
        comma_backtrack=request["comma_backtrack"],
        weighting=request["weighting"],
        embeddings=embeddings,
    )
    return describe_chunks(found.chunks)


async def _read_bounded(request) -> bytes:
    """The body, but never more than MAX_BODY_BYTES + 1 bytes of it (enough to refuse it)."""
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise RequestError(413, f"request body is {request.content_length} bytes; the limit is {MAX_BODY_BYTES}")
    parts, size = [], 0
    while size <= MAX_BODY_BYTES:
        part = await request.content.read(MAX_BODY_BYTES + 1 - size)
        if not part:
            break
        parts.append(part)
        size += len(part)
    return b"".join(parts)


def make_handler(embeddings_factory=None):
    """An aiohttp handler for the route; ``embeddings_factory()`` gives the embedding library (or None)."""

    async def handle_tokens(request):
        from aiohttp import web

        try:
            settings = parse_request(await _read_bounded(request))
            library = embeddings_factory() if embeddings_factory is not None else None
            return web.json_response(tokens_report(settings, library))
        except RequestError as e:
            return web.json_response({"error": str(e)}, status=e.status)
        except ValueError as e:  # a prompt the chunker refuses (e.g. an unreadable embedding)
            return web.json_response({"error": str(e)}, status=400)

    return handle_tokens
