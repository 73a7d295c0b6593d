"""The web extension's tokenizer route: ``POST /clip_suite/tokens``.

Request: JSON ``{"text": str, "chunking": "comfy"|"a1111", "comma_backtrack": 0..74, "weighting": ...}``
(defaults comfy, 20, comfy), optionally ``"steps": 0..10000`` and ``"scheduler"`` (the encoders' inputs).
Answer: the same object as ``python -m clip_suite tokens --json`` (``tokens``, ``chunks``, ``chunk_tokens``,
``boundaries``), computed by the pack's own tokenizer and chunker; a request with ``steps`` also gets
``schedule`` (``prompt_plan.plan_report``: ``steps``, ``prompts``, ``has_syntax``, ``entries`` with step
ranges, texts and token counts, ``notes``; no timestep percents).
Bad requests get 400 (413 when too large; JSON nested too deeply is a 400 too) with ``{"error": message}``;
so do prompts the library refuses (a schedule over its limits, an AND weight out of range), with its message.
The answer is strict JSON (no NaN or Infinity, which browsers cannot parse).
The route only tokenizes text: it reads no files except the embeddings folder's names and vectors counts,
and bounds the input size. Tokenizing runs off ComfyUI's event loop, in a small thread pool of its own, with
a time budget of ``TIME_BUDGET_S`` seconds (503 when over it), so no prompt can stall the server. The work
checks the same budget (a ``Deadline``) between texts and stops once it has passed, so a request answered
503 frees its thread for the next ones; a request still queued when its budget ends never starts.

``host.py`` registers :func:`handle_tokens` on ComfyUI's server; everything here runs without ComfyUI.
"""

from __future__ import annotations

import json
import logging

from ...clip_impl.text import CHUNKINGS, MAX_COMMA_BACKTRACK, describe_chunks
from ...clip_impl.text import WEIGHTINGS, prompt_chunks
from ...clip_impl.a1111 import MAX_STEPS, BudgetExceeded, Deadline, plan_prompt, plan_report
from ...clip_impl.a1111 import SCHEDULERS

log = logging.getLogger(__name__)

ROUTE = "/clip_suite/tokens"
MAX_BODY_BYTES = 256 * 1024
MAX_TEXT_CHARS = 100_000
TIME_BUDGET_S = 10.0  # a 100,000-character prompt of any shape takes well under 2 s
_WORKERS = 2  # tokenizing threads: hostile requests queue here, never on the event loop
_executor = None


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
    except RecursionError as e:
        raise RequestError(400, "request body is JSON nested too deeply; send {\"text\": ...}") from e
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
    out = {"text": text, "chunking": chunking, "comma_backtrack": backtrack, "weighting": weighting}
    if "steps" in payload:  # the encoders send their steps/scheduler; other callers need not
        steps = payload["steps"]
        if isinstance(steps, bool) or not isinstance(steps, int) or not 0 <= steps <= MAX_STEPS:
            raise RequestError(400, f"'steps' must be an integer 0..{MAX_STEPS}, not {steps!r}")
        scheduler = payload.get("scheduler", "normal")
        if scheduler not in SCHEDULERS:
            raise RequestError(400, f"'scheduler' must be one of {', '.join(SCHEDULERS)}, not {scheduler!r}")
        out.update(steps=steps, scheduler=scheduler)
    return out


def tokens_report(request: dict, embeddings=None) -> dict:
    """The token report for validated settings (see module docstring). ``request["deadline"]`` (optional):
    a :class:`Deadline` checked between texts (BudgetExceeded once it has passed)."""
    deadline = request.get("deadline")
    counted: dict[str, dict] = {}

    def described(text: str) -> dict:
        if text not in counted:
            if deadline is not None:
                deadline.check()
            counted[text] = describe_chunks(prompt_chunks(
                text,
                chunking=request["chunking"],
                comma_backtrack=request["comma_backtrack"],
                weighting=request["weighting"],
                embeddings=embeddings,
            ).chunks)
        return counted[text]

    report = dict(described(request["text"]))
    if "steps" in request:
        plan = plan_prompt(request["text"], weighting=request["weighting"], steps=request["steps"], deadline=deadline)
        # entries x chunks checked before the token counts, as the encoders check them before encoding
        report["schedule"] = plan_report(plan, lambda t: described(t)["tokens"],
                                         chunks_of=lambda t, tl: described(t)["chunks"], deadline=deadline)
    return report


def json_text(report: dict) -> str:
    """``report`` as strict JSON; ValueError (a 400) on NaN or Infinity, which no browser's JSON.parse reads."""
    try:
        return json.dumps(report, allow_nan=False)
    except ValueError:
        raise ValueError("the token report holds a number that is not finite (NaN or infinity); "
                         "check the prompt's weights") from None


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


def _get_executor():
    """The route's own thread pool (created on first use; threads are daemons of the server process)."""
    global _executor
    if _executor is None:
        from concurrent.futures import ThreadPoolExecutor

        _executor = ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="clip_suite_tokens")
    return _executor


def make_handler(embeddings_factory=None):
    """An aiohttp handler for the route; ``embeddings_factory()`` gives the embedding library (or None)."""

    def work(settings, deadline: Deadline):
        deadline.check()  # queued behind other requests until its budget was spent: never start
        library = embeddings_factory() if embeddings_factory is not None else None
        return json_text(tokens_report({**settings, "deadline": deadline}, library))

    async def handle_tokens(request):
        import asyncio

        from aiohttp import web

        budget = TIME_BUDGET_S
        over = f"tokenizing took more than {budget:g} s; try again, or a shorter prompt (or fewer steps)"
        try:
            settings = parse_request(await _read_bounded(request))
            deadline = Deadline(budget, "tokenizing")
            loop = asyncio.get_running_loop()
            future = loop.run_in_executor(_get_executor(), work, settings, deadline)
            try:
                # wait_for cancels a job still queued; a running one stops at its next deadline check
                body = await asyncio.wait_for(future, budget)
            except (asyncio.TimeoutError, BudgetExceeded):
                raise RequestError(503, over) from None
            return web.Response(text=body, content_type="application/json")
        except RequestError as e:
            return web.json_response({"error": str(e)}, status=e.status)
        except ValueError as e:  # a prompt the library refuses (an unreadable embedding, a schedule over its limits)
            return web.json_response({"error": str(e)}, status=400)

    return handle_tokens
