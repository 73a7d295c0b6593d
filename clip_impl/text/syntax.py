"""Prompt weighting syntaxes: ComfyUI's, AUTOMATIC1111's, and none.

Each parser turns a prompt into a flat list of :class:`Segment` s: runs of text with one weight, and
BREAK markers. Tokenization and chunk packing happen later (``chunking.py``).

- ``comfy`` follows ComfyUI's ``token_weights`` (``comfy/sd1_clip.py``): ``(x)`` multiplies by 1.1 per
  level, ``(x:w)`` sets an absolute weight that overrides outer brackets, ``[x]`` is plain text,
  ``\\(`` and ``\\)`` are literal brackets. Unbalanced brackets behave as in ComfyUI. Our parser runs in
  linear time and without recursion, so deep nesting cannot hang or overflow the stack.
- ``a1111`` follows A1111's ``parse_prompt_attention`` (``modules/prompt_parser.py``): ``(x)`` x1.1,
  ``[x]`` /1.1, ``(x:w)`` multiplies with the enclosing brackets, unclosed brackets apply to the end,
  equal-weight neighbours merge, ``\\(`` ``\\)`` ``\\[`` ``\\]`` ``\\\\`` escape and a lone backslash is dropped.
  As in A1111, a BREAK inside brackets is not a break: the word is kept
  with the bracket weight times -1 (A1111 marks breaks with weight -1 and scales that too).
- ``none``: the prompt is plain text; only BREAK is recognised.

BREAK (uppercase, a whole word) outside brackets closes the current chunk in every syntax.
"""

from __future__ import annotations

import bisect
import math
import re
from dataclasses import dataclass

SYNTAXES = ("comfy", "a1111", "none")

_BREAK_SPLIT = re.compile(r"\s*\bBREAK\b\s*", re.S)


@dataclass(frozen=True)
class Segment:
    """A run of prompt text with one weight, or a BREAK marker (``is_break``)."""

    text: str
    weight: float = 1.0
    is_break: bool = False


BREAK = Segment("BREAK", 1.0, is_break=True)


def split_breaks(text: str, weight: float = 1.0) -> list[Segment]:
    """Split plain text at BREAK words: 'a BREAK b' -> [a, BREAK, b] (whitespace at a BREAK dropped)."""
    parts = _BREAK_SPLIT.split(text)
    out: list[Segment] = []
    for i, part in enumerate(parts):
        if i:
            out.append(BREAK)
        out.append(Segment(part, weight))
    return out


def parse_prompt(text: str, syntax: str) -> list[Segment]:
    """Parse ``text`` with ``syntax`` ('comfy', 'a1111' or 'none') into segments."""
    if syntax == "comfy":
        return parse_comfy(text)
    if syntax == "a1111":
        return parse_a1111(text)
    if syntax == "none":
        return split_breaks(text)
    raise ValueError(f"unknown weighting syntax {syntax!r}; use one of {', '.join(SYNTAXES)}")


# ---------------------------------------------------------------------------------------------- comfy


def _parse_weight(literal: str) -> float | None:
    """ComfyUI reads weights with Python's float(); we also refuse inf/nan, which would poison z."""
    try:
        value = float(literal)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


class _ComfyText:
    """The prompt with escaped brackets resolved, plus indexes that make every lookup O(1)."""

    def __init__(self, text: str):
        chars: list[str] = []
        literal: list[bool] = []  # True where a bracket came from an escape (\( or \))
        i = 0
        while i < len(text):
            c = text[i]
            if c == "\\" and i + 1 < len(text) and text[i + 1] in "()":
                chars.append(text[i + 1])
                literal.append(True)
                i += 2
                continue
            chars.append(c)
            literal.append(False)
            i += 1
        self.s = "".join(chars)
        self.opens = [k for k, c in enumerate(chars) if c == "(" and not literal[k]]
        self.is_open = [c == "(" and not literal[k] for k, c in enumerate(chars)]
        self.is_close = [c == ")" and not literal[k] for k, c in enumerate(chars)]
        self.parens = [k for k in range(len(chars)) if self.is_open[k] or self.is_close[k]]
        n = len(chars)
        self.last_colon = [-1] * (n + 1)  # last ':' at an index < k
        for k in range(n):
            self.last_colon[k + 1] = k if chars[k] == ":" else self.last_colon[k]
        self.match: dict[int, int] = {}

    def next_open(self, start: int, end: int) -> int:
        k = bisect.bisect_left(self.opens, start)
        return self.opens[k] if k < len(self.opens) and self.opens[k] < end else -1

    def has_paren(self, start: int, end: int) -> bool:
        k = bisect.bisect_left(self.parens, start)
        return k < len(self.parens) and self.parens[k] < end

    def match_pairs(self, start: int, end: int) -> None:
        """Record matching brackets inside one top-level group (levels there never go negative)."""
        stack: list[int] = []
        for k in self.parens[bisect.bisect_left(self.parens, start) : bisect.bisect_left(self.parens, end)]:
            if self.is_open[k]:
                stack.append(k)
            elif stack:
                self.match[stack.pop()] = k


def _top_level_items(t: _ComfyText) -> list[tuple[int, int, bool]]:
    """Split like ComfyUI's parse_parentheses at the top level: (start, end, is_group) items.

    A ')' with nothing open makes the level negative, and the next '(' only brings it back to 0
    without opening a group: that is ComfyUI's behaviour, kept on purpose.
    """
    items: list[tuple[int, int, bool]] = []
    level = 0
    item_start = 0
    for k in t.parens:
        if t.is_open[k]:
            if level == 0:
                if k > item_start:
                    items.append((item_start, k, False))
                item_start = k
            level += 1
        else:
            level -= 1
            if level == 0:
                items.append((item_start, k + 1, True))
                item_start = k + 1
    if item_start < len(t.s):
        # An unclosed trailing item: a group only if it happens to end with ')', as in ComfyUI.
        unclosed = level > 0
        items.append((item_start, len(t.s), unclosed))
    return items


def parse_comfy(text: str) -> list[Segment]:
    """ComfyUI weighting syntax -> segments; BREAK at the top level closes a chunk."""
    t = _ComfyText(text)
    s = t.s
    out: list[Segment] = []
    # Work items: ("group", start, end, outer_weight) for bracket groups, or a ready segment.
    work: list = []
    for start, end, is_group in reversed(_top_level_items(t)):
        if is_group and t.is_open[start]:
            t.match_pairs(start, end)
            work.append(("group", start, end, 1.0))
        else:
            work.append(("top", start, end, 1.0))
    while work:
        kind, start, end, weight = work.pop()
        if kind == "text":
            out.append(Segment(s[start:end], weight))
            continue
        if kind == "top":
            out.extend(split_breaks(s[start:end]))
            continue
        # A group item s[start:end]: "(" content ")" when it ends with ')', else plain text.
        if end - start < 2 or not t.is_close[end - 1]:
            out.append(Segment(s[start:end], weight))
            continue
        c0, c1 = start + 1, end - 1
        weight = weight * 1.1
        colon = t.last_colon[c1]
        if colon > c0 and not t.has_paren(colon + 1, c1):
            explicit = _parse_weight(s[colon + 1 : c1])
            if explicit is not None:
                weight = explicit
                c1 = colon
        work.extend(reversed(_group_children(t, c0, c1, weight)))
    return out


def _group_children(t: _ComfyText, c0: int, c1: int, weight: float) -> list[tuple]:
    """Items of a group's content: text runs and nested groups, in order (ComfyUI's recursion)."""
    children: list[tuple] = []
    pos = c0
    while pos < c1:
        k = t.next_open(pos, c1)
        if k < 0:
            children.append(("text", pos, c1, weight))
            break
        if k > pos:
            children.append(("text", pos, k, weight))
        close = t.match.get(k, -1)
        if 0 <= close < c1:
            children.append(("group", k, close + 1, weight))
            pos = close + 1
        else:
            # Unclosed inside this content: the rest is one item, a group only if it ends with ')'.
            children.append(("group", k, c1, weight))
            break
    return children


# ---------------------------------------------------------------------------------------------- a1111

_A1111_TOKEN = re.compile(
    r"""
\\\(|\\\)|\\\[|\\]|\\\\|\\|\(|\[|:\s*([+-]?[.\d]+)\s*\)|\)|]|[^\\()\[\]:]+|:
""",
    re.X,
)
_A1111_BREAK_WEIGHT = -1.0


_A1111_EXACT_WORK = 200_000  # run-weight products done one by one, in A1111's order, up to this many


def parse_a1111(text: str) -> list[Segment]:
    """A1111 emphasis syntax -> segments (A1111's runs, merged where weights are equal).

    Linear in the prompt: the text is read once into runs and bracket events (a closing bracket scales
    the runs since its opening one). A1111 applies each event to every run it covers, one multiplication
    at a time (quadratic in the nesting depth); we do the same, with A1111's rounding, while that costs at
    most ``_A1111_EXACT_WORK`` multiplications (every real prompt), and otherwise take each run's product
    of factors from a prefix walk over the bracket nesting, which is linear and differs from A1111 only
    in the last bits of a float64 (the order of the multiplications).
    """
    # The runs as A1111 keeps them, in two flat lists (no per-run objects: hostile prompts make millions of
    # runs, and lists of lists would make the garbage collector's work grow faster than the prompt).
    texts: list[str] = []  # BREAK is "BREAK" with weight -1.0
    weights: list[float] = []
    events: list[tuple[int, int, float, bool]] = []  # (first run, end run, factor, square), A1111's order
    round_open: list[int] = []
    square_open: list[int] = []
    work = 0

    def scale(start: int, factor: float, square: bool = False) -> None:
        nonlocal work
        events.append((start, len(texts), factor, square))
        work += len(texts) - start

    pos = 0
    while pos < len(text):
        m = _A1111_TOKEN.match(text, pos)
        if m is None:  # cannot happen: the last alternatives match any single character
            texts.append(text[pos])
            weights.append(1.0)
            pos += 1
            continue
        token, weight_literal = m.group(0), m.group(1)
        if token.startswith("\\"):
            # \( \) \[ \] \\ give the character; a lone backslash gives nothing (A1111 drops it).
            texts.append(token[1:])
            weights.append(1.0)
        elif token == "(":
            round_open.append(len(texts))
        elif token == "[":
            square_open.append(len(texts))
        elif weight_literal is not None and round_open:
            factor = _parse_weight(weight_literal)
            if factor is None:  # e.g. "1.2.3": A1111 crashes here; we keep the ':' as text
                texts.append(":")
                weights.append(1.0)
                pos = m.start() + 1
                continue
            scale(round_open.pop(), factor)
        elif token == ")" and round_open:
            scale(round_open.pop(), 1.1)
        elif token == "]" and square_open:
            scale(square_open.pop(), 1 / 1.1, square=True)
        else:
            for i, part in enumerate(_BREAK_SPLIT.split(token)):
                if i:
                    texts.append("BREAK")
                    weights.append(_A1111_BREAK_WEIGHT)
                texts.append(part)
                weights.append(1.0)
        pos = m.end()
    for start in round_open:
        scale(start, 1.1)
    for start in square_open:
        scale(start, 1 / 1.1, square=True)
    if work <= _A1111_EXACT_WORK:
        for start, end, factor, _ in events:  # A1111's multiply_range, in its order
            for k in range(start, end):
                weights[k] *= factor
    else:
        _apply_nested(weights, events)
    if not texts:
        texts, weights = [""], [1.0]
    segments = []
    first = 0
    for k in range(1, len(texts) + 1):  # equal-weight neighbours merge; each text joined once
        if k == len(texts) or weights[k] != weights[first]:
            txt, w = "".join(texts[first:k]), weights[first]
            segments.append(BREAK if (txt == "BREAK" and w == _A1111_BREAK_WEIGHT) else Segment(txt, w))
            first = k
    return segments


def _apply_nested(weights: list[float], events: list[tuple[int, int, float, bool]]) -> None:
    """Multiply each run's weight by the factors of the events covering it, in linear time.

    Round-bracket events nest among themselves (a stack), and so do square-bracket ones; each family is a
    tree of intervals, walked once with a stack of running products (outer factor first).
    """
    families: dict[bool, list] = {True: [], False: []}
    for start, end, factor, square in events:
        if end > start:
            families[square].append((start, end, factor))
    for intervals in families.values():
        # Outer intervals first: by start, then by longer span (an inner one may share its start).
        intervals.sort(key=lambda e: (e[0], -e[1]))
        stack: list[tuple[int, float]] = []  # (end, product of factors so far)
        k = 0
        for i in range(len(weights)):
            while stack and stack[-1][0] <= i:
                stack.pop()
            while k < len(intervals) and intervals[k][0] <= i:
                start, end, factor = intervals[k]
                if end > i:
                    stack.append((end, (stack[-1][1] if stack else 1.0) * factor))
                k += 1
            if stack:
                weights[i] *= stack[-1][1]
