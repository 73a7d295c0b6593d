"""A1111 prompt editing, alternation and AND: which text a prompt stands for at each sampling step.

Follows AUTOMATIC1111 1.10's ``modules/prompt_parser.py`` (``get_learned_conditioning_prompt_schedules``,
``reconstruct_cond_batch``, ``get_multicond_prompt_list``); the grammar is in :mod:`.schedule_grammar`:

- ``[from:to:when]`` is ``from`` up to step ``when``, then ``to``; ``[to:when]`` is nothing, then ``to``;
  ``[from::when]`` is ``from``, then nothing. ``when`` with a decimal point is a fraction of the steps
  (``int(when * steps)``), without one a step number; both are capped at ``steps``. Schedules nest.
- ``[a|b|c]`` cycles one alternative per step; an empty alternative is the empty text.
- Steps: A1111 counts sampler calls from 0 and uses, at step ``i``, the first schedule entry whose end step
  is ``>= i`` (``reconstruct_cond_batch``), so ``[a:b:3]`` with 10 steps gives ``a`` on steps 0..3 and ``b``
  on 4..9, and an alternation's first text covers steps 0 and 1.
- ``AND`` (uppercase, a whole word) splits a prompt into sub-prompts composed at sampling time; a sub-prompt
  ending in ``:number`` has that weight (default 1), as A1111's ``re_weight`` reads it.

Differences from A1111 kept on purpose: brackets nested deeper than ``MAX_DEPTH`` stay text; a ``when``
that overflows a float (``1e999``) counts as ``steps`` where A1111 raises; an ``AND`` weight that is not
finite or beyond ``MAX_WEIGHT`` either way is refused (A1111 would compose with an infinite weight); and
the limits of :mod:`.limits` (steps, different texts).

Linear in the prompt and the steps: the text of a step depends only on which side of each edit's ``when``
the step is and on the step modulo the alternations' lengths, so each different text is built once
(:class:`Timeline`) and the steps share it; the number of different texts is counted, and checked against
``MAX_SCHEDULE_TEXTS``, before any is built.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left
from collections import Counter
from itertools import groupby

from ..text.encode import MAX_WEIGHT
from .limits import MAX_SCHEDULE_CHARS, MAX_SCHEDULE_TEXTS, SCHEDULE_FIX, Deadline, check_deadline, check_steps
from .schedule_grammar import Alternate, Group, Junk, Scheduled, parse_schedule

_AND = re.compile(r"\bAND\b")
_AND_WEIGHT = re.compile(r"\s*([-+]?(?:\d+\.?|\d*\.\d+))")  # after a sub-prompt's last ':' (A1111's re_weight)


def _when(literal: str, steps: int) -> int:
    """A1111's step for a ``when`` literal: with a '.', a fraction of ``steps``; capped at ``steps``."""
    value = float(literal)
    if "." in literal:
        value *= steps
    if value != value or abs(value) == float("inf"):
        return steps
    return min(steps, int(value))


class _Edit:
    """A compiled ``[before:after:when]``: ``before`` up to step ``when`` (inclusive), then ``after``."""

    __slots__ = ("when", "before", "after")

    def __init__(self, when: int, before: list, after: list):
        self.when, self.before, self.after = when, before, after


class _Cycle:
    """A compiled ``[a|b|...]``: option ``(step - 1) % len(options)``."""

    __slots__ = ("options",)

    def __init__(self, options: list):
        self.options = options


class _Compiler:
    """Items -> parts (str, _Edit, _Cycle; groups flattened into their text), and what the steps depend on:
    every ``when`` >= 1 (``whens``: A1111's boundaries), the ``when``s that can change the text
    (``splits``: inside the steps where the edit is used), and each alternation's length with the step
    range where it is used (``cycles``), all from one walk."""

    def __init__(self, steps: int):
        self.steps = steps
        self.whens: set[int] = set()
        self.splits: set[int] = set()
        self.cycles: list[tuple[int, int, float]] = []
        self.has_cycle = self.has_edit = False

    def parts(self, items, lo: float, hi: float) -> list:
        """``items`` compiled for the steps ``lo``..``hi`` (where they are used), adjacent texts joined."""
        out: list = []
        self._walk(items, lo, hi, out)
        merged: list = []
        for is_text, run in groupby(out, key=lambda p: isinstance(p, str)):
            merged += ["".join(run)] if is_text else list(run)
        return merged

    def _walk(self, items, lo: float, hi: float, out: list) -> None:
        for item in items:
            if isinstance(item, str):
                out.append(item)
            elif isinstance(item, Junk):
                out.append(item.char)
            elif isinstance(item, Group):
                out.append(item.opening)
                for i, part in enumerate(item.parts):
                    if i:
                        out.append(":")
                    self._walk(part, lo, hi, out)
                out.append(item.closing)
            elif isinstance(item, Scheduled):
                self.has_edit = True
                when = _when(item.literal_when, self.steps)
                if when >= 1:
                    self.whens.add(when)
                if lo <= when < hi:  # both sides of `when` are used: the text can change there
                    self.splits.add(when)
                before = self.parts(item.before or (), lo, min(hi, when))
                after = self.parts(item.after, max(lo, when + 1), hi)
                out.append(_Edit(when, before, after))
            else:
                self.has_cycle = True
                if lo <= hi:
                    self.cycles.append((len(item.options), int(lo), hi))
                out.append(_Cycle([self.parts(o, lo, hi) for o in item.options]))


def _render(parts: list, t: int, out: list) -> None:
    for part in parts:
        if isinstance(part, str):
            out.append(part)
        elif isinstance(part, _Edit):
            _render(part.before if t <= part.when else part.after, t, out)
        else:
            _render(part.options[(t - 1) % len(part.options)], t, out)


def _lcm_capped(periods, cap: int) -> int:
    out = 1
    for p in periods:
        out = out * p // math.gcd(out, p)
        if out > cap:
            return cap + 1
    return out


class Timeline:
    """A prompt's text at each schedule position ``t`` = 1..``last`` (A1111's step ``s`` uses ``t = max(s, 1)``)
    for a run of ``steps`` steps.

    The positions fall into intervals between the ``when``s that change the text; in interval k the text
    repeats with period ``periods[k]`` (the alternations' lengths' least common multiple there, at most the
    interval's length). :attr:`states` = the sum of those periods: an upper bound of the different texts,
    known before any is built; :meth:`build` then makes each text once."""

    def __init__(self, prompt: str, steps: int, last: int):
        self.prompt, self.steps, self.last = prompt, steps, last
        items = parse_schedule(prompt)
        compiler = _Compiler(steps)
        self.parts = compiler.parts(items, 1, math.inf) if items is not None else [prompt]
        self.has_syntax = compiler.has_edit or compiler.has_cycle  # has_schedule_syntax(prompt)
        self.whens, self.has_cycle = compiler.whens, compiler.has_cycle
        splits = sorted(w for w in compiler.splits if 1 <= w < last)
        self.starts = [1] + [w + 1 for w in splits]
        self.ends = splits + [last]
        self.periods = [1] * len(self.starts)
        if len(self.starts) <= MAX_SCHEDULE_TEXTS:  # more intervals than that is refused by the caller
            self._periods(splits, compiler.cycles)
        self.states = sum(self.periods)
        self.texts: list[str] = []
        self.sequences: list[list[int]] = []

    def _periods(self, splits: list[int], cycles) -> None:
        events: dict[int, list[tuple[int, int]]] = {}
        for period, lo, hi in cycles:
            lo, hi = max(lo, 1), min(hi, self.last)
            if lo <= hi and period > 1:
                events.setdefault(bisect_left(splits, lo), []).append((period, 1))
                events.setdefault(bisect_left(splits, hi) + 1, []).append((period, -1))
        active: Counter = Counter()
        lcm = 1
        for k in range(len(self.starts)):
            if k in events:
                for period, change in events[k]:
                    active[period] += change
                    if not active[period]:
                        del active[period]
                lcm = _lcm_capped(sorted(active), self.last)
            self.periods[k] = min(self.ends[k] - self.starts[k] + 1, lcm)

    def build(self, deadline: Deadline | None = None, max_chars: int = MAX_SCHEDULE_CHARS) -> int:
        """Make each different text once (at most :attr:`states` of them); returns their characters.
        ValueError as soon as those pass ``max_chars`` (every text is in an entry at least once, so the
        schedule's entries would hold more), before more texts are built."""
        index: dict[str, int] = {}
        chars = 0
        for start, period in zip(self.starts, self.periods):
            sequence = []
            for t in range(start, start + period):
                check_deadline(deadline)
                out: list[str] = []
                _render(self.parts, t, out)
                text = "".join(out)
                if text not in index:
                    chars += len(text)
                    if chars > max_chars:
                        raise ValueError(
                            f"the prompt schedule's different texts hold more than {MAX_SCHEDULE_CHARS:,} characters "
                            f"in all (from a {len(self.prompt):,}-character prompt); the limit is "
                            f"{MAX_SCHEDULE_CHARS:,}: shorten the prompt, or {SCHEDULE_FIX}"
                        )
                    index[text] = len(index)
                sequence.append(index[text])
            self.sequences.append(sequence)
        self.texts = list(index)
        return chars

    def boundaries(self) -> list[int]:
        """A1111's end steps: ``steps``, every ``when`` >= 1, and every step when there is an alternation."""
        every_step = set(range(1, self.steps + 1)) if self.has_cycle else set()
        return sorted({self.steps, *self.whens} | every_step)

    def index_at(self, t: int) -> int:
        """Which of :attr:`texts` position ``t`` uses (after :meth:`build`)."""
        k = bisect_left(self.ends, t)
        sequence = self.sequences[k]
        return sequence[(t - self.starts[k]) % len(sequence)]

    def runs(self, limit: int, on_limit) -> list[list[int]]:
        """``[[first t, last t, text index], ...]``: maximal runs of one text over 1..last; ``on_limit(n)``
        (which raises) is called as soon as there are more than ``limit`` runs."""
        out: list[list[int]] = []
        for start, end, sequence in zip(self.starts, self.ends, self.sequences):
            if len(set(sequence)) == 1:
                steps_with = [(start, end, sequence[0])]
            else:  # an alternation changes the text within the interval: walk it (the runs are many anyway)
                steps_with = ((t, t, sequence[(t - start) % len(sequence)]) for t in range(start, end + 1))
            for a, b, i in steps_with:
                if out and out[-1][2] == i:
                    out[-1][1] = b
                else:
                    out.append([a, b, i])
                    if len(out) > limit:
                        on_limit(len(out))
        return out


def _too_many_texts(states: int, steps: int) -> None:
    raise ValueError(
        f"the prompt schedule needs up to {states} different texts over {steps} steps; the limit is "
        f"{MAX_SCHEDULE_TEXTS} texts to encode: {SCHEDULE_FIX}"
    )


def _timeline(prompt: str, steps: int, last: int, deadline: Deadline | None) -> Timeline:
    timeline = Timeline(prompt, steps, last)
    if timeline.states > MAX_SCHEDULE_TEXTS:
        _too_many_texts(timeline.states, steps)
    timeline.build(deadline)
    return timeline


def prompt_schedule(prompt: str, steps: int, deadline: Deadline | None = None) -> list[tuple[int, str]]:
    """A1111's ``get_learned_conditioning_prompt_schedules`` for one prompt: ``[(end_at_step, text), ...]``,
    end steps rising, the last one ``steps``. A prompt without schedule syntax gives ``[(steps, prompt)]``.
    ValueError for steps outside 1..MAX_STEPS and schedules over the limits (:mod:`.limits`)."""
    steps = check_steps(steps, minimum=1)
    timeline = _timeline(prompt, steps, steps, deadline)
    return [(t, timeline.texts[timeline.index_at(t)]) for t in timeline.boundaries()]


def step_texts(prompt: str, steps: int, deadline: Deadline | None = None) -> list[str]:
    """The text A1111 uses at each sampling step 0..steps-1 (``reconstruct_cond_batch``'s rule: the first
    entry of the schedule whose end step is at least the step); equal texts are one shared string."""
    steps = check_steps(steps, minimum=1)
    timeline = _timeline(prompt, steps, max(steps - 1, 1), deadline)
    out: list[str] = []
    for a, b, i in timeline.runs(steps, lambda n: None):
        out += [timeline.texts[i]] * (b - a + 1 + (a == 1))  # step 0 uses position 1 too
    return out[:steps]


def has_schedule_syntax(prompt: str) -> bool:
    """Whether ``prompt`` holds prompt editing or alternation that A1111 would resolve."""
    items = parse_schedule(prompt)
    return items is not None and _any_schedule(items)


def _any_schedule(items) -> bool:
    for item in items:
        if isinstance(item, (Scheduled, Alternate)):
            return True
        if isinstance(item, Group) and any(_any_schedule(p) for p in item.parts):
            return True
    return False


def split_and(prompt: str) -> list[tuple[str, float]]:
    """A1111's ``AND`` composition: the sub-prompts and their weights (``text :1.5`` -> 1.5; default 1).
    A prompt without AND is one sub-prompt (which may still carry a trailing weight). ValueError for a
    weight that is not finite or beyond ``MAX_WEIGHT`` either way (what the encoders allow a weight)."""
    out = []
    for n, part in enumerate(_AND.split(prompt), 1):
        # A1111's re_weight, ^((?:\s|.)*?)(?:\s*:\s*NUMBER)?\s*$, read without its regex (quadratic on
        # long runs of spaces): the weight is the number after the last ':' when only spaces follow it.
        stripped = part.rstrip()
        colon = stripped.rfind(":")
        m = _AND_WEIGHT.fullmatch(stripped, colon + 1) if colon >= 0 else None
        if m is None:
            out.append((stripped, 1.0))
            continue
        weight = float(m.group(1))
        if not (math.isfinite(weight) and abs(weight) <= MAX_WEIGHT):
            shown = m.group(1) if len(m.group(1)) <= 24 else f"{m.group(1)[:12]}...({len(m.group(1))} characters)"
            raise ValueError(
                f"AND weight {shown} of sub-prompt {n} is out of range: use a number between {-MAX_WEIGHT:g} and "
                f"{MAX_WEIGHT:g}, as in 'a cat :1.5 AND a dog :0.5'"
            )
        out.append((stripped[:colon].rstrip(), weight))
    return out
