"""A1111 prompt editing, alternation and AND: which text a prompt stands for at each sampling step.

Follows AUTOMATIC1111 1.10's ``modules/prompt_parser.py`` (``get_learned_conditioning_prompt_schedules``,
``reconstruct_cond_batch``, ``get_multicond_prompt_list``), written anew without its grammar library:

- ``[from:to:when]`` is ``from`` up to step ``when``, then ``to``; ``[to:when]`` is nothing, then ``to``;
  ``[from::when]`` is ``from``, then nothing. ``when`` with a decimal point is a fraction of the steps
  (``int(when * steps)``), without one a step number; both are capped at ``steps``. Schedules nest.
- ``[a|b|c]`` cycles one alternative per step; an empty alternative is the empty text.
- Anything that is not one of these stays text, brackets included (``(x:1.2)`` and ``[x]`` are left for the
  weighting parser). A prompt A1111's grammar cannot read at all (a ``|`` outside any alternation, a
  backslash at the end or before a line break) is used as written at every step, as A1111 does.
- Steps: A1111 counts sampler calls from 0 and uses, at step ``i``, the first schedule entry whose end step
  is ``>= i`` (``reconstruct_cond_batch``), so ``[a:b:3]`` with 10 steps gives ``a`` on steps 0..3 and ``b``
  on 4..9, and an alternation's first text covers steps 0 and 1.
- ``AND`` (uppercase, a whole word) splits a prompt into sub-prompts composed at sampling time; a sub-prompt
  ending in ``:number`` has that weight (default 1), as A1111's ``re_weight`` reads it.

Differences from A1111 kept on purpose: brackets nested deeper than :data:`MAX_DEPTH` stay text (A1111's
parser has no limit; ours must stay linear on hostile prompts), and a ``when`` that overflows a float
(``1e999``) counts as ``steps`` where A1111 raises.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_DEPTH = 64  # nesting depth of brackets inside one schedule/alternation construct

# lark's common.SIGNED_NUMBER as the grammar library compiles it (ordered alternatives, first match wins)
_NUMBER = re.compile(r"[+-]?(?:\d+[eE][+-]?\d+|(?:\d+\.\d*|\.\d+)(?:[eE][+-]?\d+)?|\d+)")
_SPACE = re.compile(r"\s+")
_PLAIN = re.compile(r"(?:[^\\\[\]():|]|\\.)+")  # '.' stops at a line break, as in A1111's grammar
_SPECIAL = set("[]():|")
_AND = re.compile(r"\bAND\b")
_WEIGHT = re.compile(r"^((?:\s|.)*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$")


class _Unreadable(Exception):
    """The prompt cannot be read as a schedule at all (A1111 then uses it as written)."""


@dataclass(frozen=True)
class _Junk:
    """A bracket or colon that A1111's grammar reads as stray text at the top level."""

    char: str


@dataclass(frozen=True)
class _Group:
    """``( p )``, ``( p : p )`` or ``[ p ]``: emphasis, left as text for the weighting parser."""

    opening: str
    parts: tuple  # one or two item tuples
    closing: str

    def literal(self) -> list:
        out = [_Junk(self.opening), *self.parts[0]]
        if len(self.parts) == 2:
            out += [_Junk(":"), *self.parts[1]]
        return out + [_Junk(self.closing)]


@dataclass(frozen=True)
class _Scheduled:
    before: tuple | None  # None: the [to:when] form
    after: tuple
    literal_when: str  # the number as written
    raw_tail: str  # what stands between the last ':' and ']' (spaces and the number)

    def literal(self) -> list:
        out = [_Junk("[")]
        if self.before is not None:
            out += [*self.before, _Junk(":")]
        return out + [*self.after, _Junk(":"), self.raw_tail, _Junk("]")]


@dataclass(frozen=True)
class _Alternate:
    options: tuple


class _Parser:
    """Recursive descent over A1111's schedule grammar. A construct is ``[``/``(`` ... matching bracket
    with readable content; at the top level a bracket that opens no construct is stray text."""

    def __init__(self, text: str):
        self.text = text

    def top(self) -> list:
        text, pos, out = self.text, 0, []
        while pos < len(text):
            ch = text[pos]
            if ch in "[(":
                found = self.construct(pos, 1)
                if found is not None:
                    out.append(found[0])
                    pos = found[1]
                    continue
                out.append(_Junk(ch))
                pos += 1
            elif ch in "]):":
                out.append(_Junk(ch))
                pos += 1
            else:
                items, end = self.sequence(pos, 0)
                if end == pos:  # '|' or an unreadable backslash
                    raise _Unreadable
                out.extend(items)
                pos = end
        return _choose_literals(out)

    def sequence(self, pos: int, depth: int) -> tuple[list, int]:
        """Items of a ``prompt`` from ``pos`` up to the first ``] ) : |`` at this level (or the end).
        Inside a construct (depth > 0) a failure gives the position -1; at the top level a backslash
        that escapes nothing raises _Unreadable."""
        text, out = self.text, []
        while pos < len(text):
            ch = text[pos]
            if ch in "[(":
                found = self.construct(pos, depth + 1)
                if found is None:
                    return out, -1 if depth else pos
                out.append(found[0])
                pos = found[1]
                continue
            if ch in _SPECIAL:
                break
            m = _PLAIN.match(text, pos)
            if m is None:  # a backslash at the end or before a line break
                if depth:
                    return out, -1
                raise _Unreadable
            out.append(m.group(0))
            pos = m.end()
        return out, pos

    def construct(self, pos: int, depth: int) -> tuple[object, int] | None:
        """The construct opening at ``pos``: (node, end) or None when there is none."""
        if depth > MAX_DEPTH:
            return None
        text = self.text
        first, p = self.sequence(pos + 1, depth)
        if p < 0 or p >= len(text):
            return None
        if text[pos] == "(":
            if text[p] == ")":
                return _Group("(", (tuple(first),), ")"), p + 1
            if text[p] != ":":
                return None
            second, q = self.sequence(p + 1, depth)
            if q < 0 or q >= len(text) or text[q] != ")":
                return None
            return _Group("(", (tuple(first), tuple(second)), ")"), q + 1
        if text[p] == "]":
            return _Group("[", (tuple(first),), "]"), p + 1
        if text[p] == "|":
            options = [tuple(first)]
            while p < len(text) and text[p] == "|":
                item, p = self.sequence(p + 1, depth)
                if p < 0:
                    return None
                options.append(tuple(item))
            if p >= len(text) or text[p] != "]":
                return None
            return _Alternate(tuple(options)), p + 1
        if text[p] != ":":
            return None
        closed = self.number_close(p + 1)  # [to:when]
        if closed is not None:
            return _Scheduled(None, tuple(first), *closed[0]), closed[1]
        second, q = self.sequence(p + 1, depth)
        if q < 0 or q >= len(text) or text[q] != ":":
            return None
        closed = self.number_close(q + 1)
        if closed is None:
            return None
        return _Scheduled(tuple(first), tuple(second), *closed[0]), closed[1]

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


def _choose_literals(items: list) -> list:
    """Which top-level constructs A1111's parser reads as stray text. Its grammar lets a top-level
    bracket be either; the derivation its parser settles on (measured on A1111's own code, see the
    parity tests) reads a construct as text exactly when it is followed by an even run (2, 4, ...) of
    stray brackets or colons, the text of constructs read so to its right included. Alternations are
    never text (a '|' outside brackets is unreadable)."""
    pending, out, run = list(items), [], 0
    while pending:
        item = pending.pop()
        if isinstance(item, (_Group, _Scheduled)) and run >= 2 and run % 2 == 0:
            pending.extend(item.literal())
            continue
        out.append(item)
        run = run + 1 if isinstance(item, _Junk) else 0
    out.reverse()
    return out


def _parse(prompt: str) -> list | None:
    try:
        return _Parser(prompt).top()
    except _Unreadable:
        return None


def _when(literal: str, steps: int) -> int:
    """A1111's step for a ``when`` literal: with a '.', a fraction of ``steps``; capped at ``steps``."""
    value = float(literal)
    if "." in literal:
        value *= steps
    if value != value or abs(value) == float("inf"):
        return steps
    return min(steps, int(value))


def _boundaries(items, steps: int, found: set) -> None:
    for item in items:
        if isinstance(item, _Group):
            for part in item.parts:
                _boundaries(part, steps, found)
        elif isinstance(item, _Scheduled):
            when = _when(item.literal_when, steps)
            if when >= 1:
                found.add(when)
            _boundaries(item.before or (), steps, found)
            _boundaries(item.after, steps, found)
        elif isinstance(item, _Alternate):
            found.update(range(1, steps + 1))
            for option in item.options:
                _boundaries(option, steps, found)


def _text_at(items, step: int, steps: int) -> str:
    out = []
    for item in items:
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, _Junk):
            out.append(item.char)
        elif isinstance(item, _Group):
            out.append(item.opening + ":".join(_text_at(p, step, steps) for p in item.parts) + item.closing)
        elif isinstance(item, _Scheduled):
            chosen = (item.before or ()) if step <= _when(item.literal_when, steps) else item.after
            out.append(_text_at(chosen, step, steps))
        else:
            out.append(_text_at(item.options[(step - 1) % len(item.options)], step, steps))
    return "".join(out)


def prompt_schedule(prompt: str, steps: int) -> list[tuple[int, str]]:
    """A1111's ``get_learned_conditioning_prompt_schedules`` for one prompt: ``[(end_at_step, text), ...]``,
    end steps rising, the last one ``steps``. A prompt without schedule syntax gives ``[(steps, prompt)]``."""
    if steps < 1:
        raise ValueError(f"steps={steps}: a schedule needs at least 1 step")
    items = _parse(prompt)
    if items is None:
        return [(steps, prompt)]
    found = {steps}
    _boundaries(items, steps, found)
    return [(t, _text_at(items, t, steps)) for t in sorted(found)]


def step_texts(prompt: str, steps: int) -> list[str]:
    """The text A1111 uses at each sampling step 0..steps-1 (``reconstruct_cond_batch``'s rule: the first
    entry of the schedule whose end step is at least the step)."""
    schedule = prompt_schedule(prompt, steps)
    out, k = [], 0
    for step in range(steps):
        while schedule[k][0] < step:
            k += 1
        out.append(schedule[k][1])
    return out


def has_schedule_syntax(prompt: str) -> bool:
    """Whether ``prompt`` holds prompt editing or alternation that A1111 would resolve."""
    items = _parse(prompt)
    return items is not None and _any_schedule(items)


def _any_schedule(items) -> bool:
    for item in items:
        if isinstance(item, (_Scheduled, _Alternate)):
            return True
        if isinstance(item, _Group) and any(_any_schedule(p) for p in item.parts):
            return True
    return False


def split_and(prompt: str) -> list[tuple[str, float]]:
    """A1111's ``AND`` composition: the sub-prompts and their weights (``text :1.5`` -> 1.5; default 1).
    A prompt without AND is one sub-prompt (which may still carry a trailing weight)."""
    out = []
    for part in _AND.split(prompt):
        m = _WEIGHT.search(part)
        if m is None:  # cannot happen: the pattern matches any string
            out.append((part, 1.0))
            continue
        text, weight = m.groups()
        out.append((text, float(weight) if weight is not None else 1.0))
    return out
