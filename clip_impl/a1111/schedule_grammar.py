"""A1111's prompt-editing grammar (``modules/prompt_parser.py`` 1.10, written anew without its grammar
library): a prompt read into plain text, stray brackets, emphasis groups, ``[from:to:when]`` edits and
``[a|b]`` alternations. :mod:`.schedule` turns the tree into the text of each sampling step.

- A construct is ``[``/``(`` ... matching bracket with readable content; at the top level a bracket that
  opens no construct is stray text. Anything that is not an edit or alternation stays text, brackets
  included (``(x:1.2)`` and ``[x]`` are left for the weighting parser).
- A prompt A1111's grammar cannot read at all (a ``|`` outside any alternation, a backslash at the end or
  before a line break) is used as written at every step, as A1111 does: :func:`parse_schedule` gives None.
- Constructs nested deeper than :data:`MAX_DEPTH` stay text (A1111's parser has no limit).

Linear in the prompt's length whatever its shape: the construct starting at each bracket is read once,
from the last bracket to the first, so a bracket that opens no construct is never read again from the
brackets before it (the reader this replaces went back over the same text once per enclosing bracket,
up to :data:`MAX_DEPTH` times, and recursed once per level).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_DEPTH = 64  # nesting depth of brackets inside one schedule/alternation construct

# lark's common.SIGNED_NUMBER as the grammar library compiles it (ordered alternatives, first match wins)
_NUMBER = re.compile(r"[+-]?(?:\d+[eE][+-]?\d+|(?:\d+\.\d*|\.\d+)(?:[eE][+-]?\d+)?|\d+)")
_SPACE = re.compile(r"\s+")
_PLAIN = re.compile(r"(?:[^\\\[\]():|]|\\.)+")  # '.' stops at a line break, as in A1111's grammar
_SPECIAL = frozenset("[]():|")


class _Unreadable(Exception):
    """The prompt cannot be read as a schedule at all (A1111 then uses it as written)."""


@dataclass(frozen=True)
class Junk:
    """A bracket or colon that A1111's grammar reads as stray text at the top level."""

    char: str


@dataclass(frozen=True)
class Group:
    """``( p )``, ``( p : p )`` or ``[ p ]``: emphasis, left as text for the weighting parser."""

    opening: str
    parts: tuple  # one or two item tuples
    closing: str

    def literal(self) -> list:
        """The group as stray text: its brackets and colon become :class:`Junk`."""
        out = [Junk(self.opening), *self.parts[0]]
        if len(self.parts) == 2:
            out += [Junk(":"), *self.parts[1]]
        return out + [Junk(self.closing)]


@dataclass(frozen=True)
class Scheduled:
    """``[before:after:when]`` (``before`` None: the ``[after:when]`` form)."""

    before: tuple | None
    after: tuple
    literal_when: str  # the number as written
    raw_tail: str  # what stands between the last ':' and ']' (spaces and the number)

    def literal(self) -> list:
        """The edit as stray text."""
        out = [Junk("[")]
        if self.before is not None:
            out += [*self.before, Junk(":")]
        return out + [*self.after, Junk(":"), self.raw_tail, Junk("]")]


@dataclass(frozen=True)
class Alternate:
    """``[a|b|...]``: one option per step, cycling."""

    options: tuple


_FAILED = False  # a bracket that opens no construct (None: not read yet)
_JUNK = {c: Junk(c) for c in "[]():"}  # immutable: one of each, shared


class _Parser:
    """A1111's schedule grammar read bottom-up: ``found[p]`` is, for each ``[``/``(`` at ``p``, the
    construct opening there as (node, end, height) with no depth limit, or ``_FAILED``. Inside a construct
    every nested construct must be readable, so a construct with a limit of ``MAX_DEPTH`` levels is
    readable exactly when it is without a limit and its height is at most ``MAX_DEPTH``."""

    def __init__(self, text: str):
        self.text = text
        self.found: list = [None] * len(text)
        # Right to left: every construct nested in the one at p starts after p and is already known.
        square, round_ = text.rfind("["), text.rfind("(")
        while square >= 0 or round_ >= 0:
            if square > round_:
                pos, square = square, text.rfind("[", 0, square)
            else:
                pos, round_ = round_, text.rfind("(", 0, round_)
            self.found[pos] = self.construct(pos)

    def top(self) -> list:
        """The top-level items (A1111's choice of which top-level constructs are stray text applied)."""
        text, pos, out = self.text, 0, []
        while pos < len(text):
            ch = text[pos]
            if ch in "[(":
                found = self.found[pos]
                if found and found[2] <= MAX_DEPTH:
                    out.append(found[0])
                    pos = found[1]
                    continue
                out.append(_JUNK[ch])
                pos += 1
            elif ch in "]):":
                out.append(_JUNK[ch])
                pos += 1
            else:
                m = _PLAIN.match(text, pos)
                if m is None:  # '|' or a backslash at the end or before a line break
                    raise _Unreadable
                out.append(m.group(0))
                pos = m.end()
        return choose_literals(out)

    def sequence(self, pos: int) -> tuple[list, int, int]:
        """Items of a ``prompt`` inside a construct from ``pos`` up to the first ``] ) : |`` at this level
        (or the end): (items, end, height of the tallest nested construct); end -1 when something in it
        cannot be read (a nested bracket that opens no construct, an unreadable backslash)."""
        text, found, out, height, n = self.text, self.found, [], 0, len(self.text)
        while pos < n:
            ch = text[pos]
            if ch in "[(":
                nested = found[pos]
                if not nested:
                    return out, -1, 0
                out.append(nested[0])
                pos = nested[1]
                height = max(height, nested[2])
                continue
            if ch in _SPECIAL:
                break
            m = _PLAIN.match(text, pos)
            if m is None:
                return out, -1, 0
            out.append(m.group(0))
            pos = m.end()
        return out, pos, height

    def construct(self, pos: int):
        """The construct opening at ``pos``: (node, end, height) or ``_FAILED``."""
        text, n = self.text, len(self.text)
        first, p, h1 = self.sequence(pos + 1)
        if p < 0 or p >= n:
            return _FAILED
        if text[pos] == "(":
            if text[p] == ")":
                return Group("(", (tuple(first),), ")"), p + 1, h1 + 1
            if text[p] != ":":
                return _FAILED
            second, q, h2 = self.sequence(p + 1)
            if q < 0 or q >= n or text[q] != ")":
                return _FAILED
            return Group("(", (tuple(first), tuple(second)), ")"), q + 1, max(h1, h2) + 1
        if text[p] == "]":
            return Group("[", (tuple(first),), "]"), p + 1, h1 + 1
        if text[p] == "|":
            options, height = [tuple(first)], h1
            while p < n and text[p] == "|":
                item, p, h = self.sequence(p + 1)
                if p < 0:
                    return _FAILED
                options.append(tuple(item))
                height = max(height, h)
            if p >= n or text[p] != "]":
                return _FAILED
            return Alternate(tuple(options)), p + 1, height + 1
        if text[p] != ":":
            return _FAILED
        closed = self.number_close(p + 1)  # [to:when]
        if closed is not None:
            return Scheduled(None, tuple(first), *closed[0]), closed[1], h1 + 1
        second, q, h2 = self.sequence(p + 1)
        if q < 0 or q >= n or text[q] != ":":
            return _FAILED
        closed = self.number_close(q + 1)
        if closed is None:
            return _FAILED
        return Scheduled(tuple(first), tuple(second), *closed[0]), closed[1], max(h1, h2) + 1

    def number_close(self, pos: int) -> tuple[tuple[str, str], int] | None:
        """``[space] NUMBER [space] ]`` at ``pos``: ((number, raw text before ``]``), position after ``]``)."""
        text, start = self.text, pos
        m = _SPACE.match(text, pos)
        pos = m.end() if m else pos
        m = _NUMBER.match(text, pos)
        if m is None:
            return None
        literal, pos = m.group(0), m.end()
        m = _SPACE.match(text, pos)
        pos = m.end() if m else pos
        if pos < len(text) and text[pos] == "]":
            return (literal, text[start:pos]), pos + 1
        return None


def choose_literals(items: list) -> list:
    """Which top-level constructs A1111's parser reads as stray text. Its grammar lets a top-level
    bracket be either; the derivation its parser settles on (measured on A1111's own code, see the
    parity tests) reads a construct as text exactly when it is followed by an even run (2, 4, ...) of
    stray brackets or colons, the text of constructs read so to its right included. Alternations are
    never text (a '|' outside brackets is unreadable)."""
    pending, out, run = list(items), [], 0
    while pending:
        item = pending.pop()
        if isinstance(item, (Group, Scheduled)) and run >= 2 and run % 2 == 0:
            pending.extend(item.literal())
            continue
        out.append(item)
        run = run + 1 if isinstance(item, Junk) else 0
    out.reverse()
    return out


def parse_schedule(prompt: str) -> tuple | None:
    """The prompt's top-level items (str, :class:`Junk`, :class:`Group`, :class:`Scheduled`,
    :class:`Alternate`), or None when A1111's grammar cannot read it (then it is used as written)."""
    if "[" not in prompt and "|" not in prompt:
        return (prompt,) if prompt else ()  # no edit or alternation can start: one text (fast path)
    try:
        return tuple(_Parser(prompt).top())
    except _Unreadable:
        return None
