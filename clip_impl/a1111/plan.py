"""A prompt as A1111 uses it over a sampling run: which texts to encode, for which steps, with which weight.

Order of A1111 1.10's processing (``processing.py``, ``prompt_parser.py``): extra-network tags are removed
from the prompt, the prompt is split at ``AND`` into weighted sub-prompts, each sub-prompt is scheduled
(prompt editing, alternation), and each step's text is then parsed for emphasis and encoded. Tags and
``AND`` belong to A1111's syntax: under ComfyUI's weighting (and ``none``) they stay words, with a note.
Schedules are resolved under every weighting when ``steps`` > 0; with ``steps`` = 0 the text is encoded as
written (the note says when it holds schedule syntax).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .extra_networks import NetworkTag, strip_tags, tags_note, find_tags
from ..text.pipeline import weighting_syntax
from .limits import (
    MAX_SCHEDULE_CHARS, MAX_SCHEDULE_ENTRY_CHUNKS, MAX_SCHEDULE_TEXTS, SCHEDULE_FIX, Deadline, check_deadline, check_steps,
)
from .schedule import Timeline, has_schedule_syntax, split_and

_AND_WORD = re.compile(r"\bAND\b")


@dataclass(frozen=True)
class PlanEntry:
    """One conditioning entry: the text (SDXL: and the CLIP-L text) used on sampler steps
    ``start_step``..``end_step - 1``, composed with ``weight`` (A1111's AND weight)."""

    text: str
    text_l: str | None
    weight: float
    start_step: int
    end_step: int
    part: int = 0  # which AND sub-prompt


@dataclass
class PromptPlan:
    """Entries (steps = 0: one per sub-prompt, covering every step), the tags found and notes."""

    entries: list[PlanEntry]
    steps: int
    tags: list[NetworkTag] = field(default_factory=list)
    has_schedule: bool = False
    weights: list[float] = field(default_factory=list)  # per AND sub-prompt (one entry: no AND)
    notes: list[str] = field(default_factory=list)

    @property
    def texts(self) -> list[str]:
        """The distinct texts, in order of first use."""
        return list(dict.fromkeys(e.text for e in self.entries))

    @property
    def scheduled(self) -> bool:
        """Whether the entries hold timestep ranges (some entry covers less than every step)."""
        return self.steps > 0 and any(e.start_step > 0 or e.end_step < self.steps for e in self.entries)


def _too_many_entries(count: int, steps: int) -> None:
    raise ValueError(
        f"the prompt schedule needs more than {MAX_SCHEDULE_ENTRY_CHUNKS} conditioning entries over {steps} steps "
        f"(one for each run of steps with one text, each at least one 77-token chunk; {count} so far); the limit "
        f"is {MAX_SCHEDULE_ENTRY_CHUNKS} entries x chunks: {SCHEDULE_FIX}"
    )


def _pair_runs(runs: list[list[int]], l_runs: list[list[int]] | None) -> list[tuple[int, int, int, int | None]]:
    """Runs of (text, CLIP-L text) over the same positions: split wherever either changes."""
    if l_runs is None:
        return [(a, b, i, None) for a, b, i in runs]
    out, j = [], 0
    for a, b, i in runs:
        while a <= b:
            while l_runs[j][1] < a:
                j += 1
            end = min(b, l_runs[j][1])
            out.append((a, end, i, l_runs[j][2]))
            a = end + 1
    return out


def _check_texts(entries: list[PlanEntry], steps: int) -> None:
    """Distinct (text, text_l) pairs and characters over all entries, against the limits."""
    pairs = len({(e.text, e.text_l) for e in entries})
    if pairs > MAX_SCHEDULE_TEXTS:
        raise ValueError(
            f"the prompt needs {pairs} different texts (its AND sub-prompts, schedules and CLIP-L prompt together) "
            f"over {steps} steps; the limit is {MAX_SCHEDULE_TEXTS} texts to encode: {SCHEDULE_FIX}"
        )
    chars = sum(len(e.text) + len(e.text_l or "") for e in entries)
    if chars > MAX_SCHEDULE_CHARS:
        raise ValueError(
            f"the prompt schedule's {len(entries)} entries hold {chars:,} characters of text in all; the limit is "
            f"{MAX_SCHEDULE_CHARS:,}: shorten the prompt, or {SCHEDULE_FIX}"
        )


def plan_prompt(text: str, *, weighting: str, steps: int = 0, text_l: str | None = None,
                sampler_steps: int | None = None, deadline: Deadline | None = None) -> PromptPlan:
    """Plan ``text`` (and SDXL's separate ``text_l``; None or empty: CLIP-L uses ``text``).

    ``steps``: A1111's step count, 0..MAX_STEPS (0: schedules are not resolved). ``sampler_steps``: the steps
    the sampler runs with the chosen scheduler when that differs (a step past A1111's last uses the last
    text). ``deadline``: a :class:`Deadline` checked between texts. ValueError for steps out of range, AND
    weights out of range, and plans over the limits of :mod:`.limits` (checked before the texts are built).
    """
    steps = check_steps(steps)
    if sampler_steps is not None:
        sampler_steps = check_steps(sampler_steps, minimum=1, name="sampler_steps")
    a1111 = weighting_syntax(weighting) == "a1111"
    text_l = text_l or None
    notes: list[str] = []
    tags = find_tags(text) + (find_tags(text_l) if text_l else [])
    if a1111:
        text, _ = strip_tags(text)
        text_l = strip_tags(text_l)[0] if text_l else None
    if tags:
        notes.append(tags_note(tags, removed=a1111))
    if a1111:
        parts = split_and(text)
        if text_l and _AND_WORD.search(text_l):
            notes.append("AND in text_l is encoded as a word: only the main prompt is split into sub-prompts")
    else:
        parts = [(text, 1.0)]
        if _AND_WORD.search(text) or (text_l and _AND_WORD.search(text_l)):
            notes.append(f"AND is encoded as a word under {weighting} weighting; use a1111 weighting for A1111's AND")
    if len(parts) > MAX_SCHEDULE_ENTRY_CHUNKS:  # one entry per sub-prompt at least
        _too_many_entries(len(parts), steps)
    weights = [w for _, w in parts]
    if steps == 0:
        has_schedule = any(has_schedule_syntax(t) for t, _ in parts) or bool(text_l and has_schedule_syntax(text_l))
        if has_schedule:
            notes.append("the prompt holds A1111 schedule syntax ([a:b:when], [a|b]): encoded as written; "
                         "set steps (and scheduler) to the sampler's to resolve it")
        entries = [PlanEntry(t, text_l, w, 0, 0, i) for i, (t, w) in enumerate(parts)]
        _check_texts(entries, steps)
        return PromptPlan(entries, 0, tags, has_schedule, weights, notes)
    n = sampler_steps or steps
    last = max(1, min(n, steps) - 1)  # schedule positions used: sampler step s uses max(min(s, steps - 1), 1)
    by_text: dict[str, Timeline] = {}  # equal sub-prompts share their texts (A1111 encodes them once too)
    timelines = [by_text.get(part) or by_text.setdefault(part, Timeline(part, steps, last)) for part, _ in parts]
    l_timeline = Timeline(text_l, steps, last) if text_l else None
    has_schedule = any(t.has_syntax for t in by_text.values()) or bool(l_timeline and l_timeline.has_syntax)
    states = sum(t.states for t in by_text.values()) + (l_timeline.states if l_timeline else 0)
    if states > MAX_SCHEDULE_TEXTS:  # counted before any text is built
        together = " (its AND sub-prompts and CLIP-L prompt together)" if len(by_text) > 1 or l_timeline else ""
        raise ValueError(
            f"the prompt schedule needs up to {states} different texts over {steps} steps{together}; the limit is "
            f"{MAX_SCHEDULE_TEXTS} texts to encode: {SCHEDULE_FIX}"
        )
    too_many = lambda count: _too_many_entries(len(entries) + count, steps)  # noqa: E731
    entries: list[PlanEntry] = []
    chars = 0  # of the different texts built so far: bounded before all are built
    l_runs = None
    if l_timeline is not None:
        chars += l_timeline.build(deadline)
        l_runs = l_timeline.runs(MAX_SCHEDULE_ENTRY_CHUNKS, too_many)
    for i, ((_, weight), timeline) in enumerate(zip(parts, timelines)):
        if not timeline.sequences:  # built once per different sub-prompt
            chars += timeline.build(deadline, MAX_SCHEDULE_CHARS - chars)
        runs = _pair_runs(timeline.runs(MAX_SCHEDULE_ENTRY_CHUNKS - len(entries), too_many), l_runs)
        for a, b, t, tl in runs:
            entries.append(PlanEntry(timeline.texts[t], l_timeline.texts[tl] if l_timeline else None, weight,
                                     0 if a == 1 else a, n if b == last else b + 1, i))
        if len(entries) > MAX_SCHEDULE_ENTRY_CHUNKS:
            too_many(0)
    _check_texts(entries, steps)
    return PromptPlan(entries, n, tags, has_schedule, weights, notes)


def check_entry_chunks(plan: PromptPlan, chunks_of, deadline: Deadline | None = None) -> int:
    """Entries x chunks of ``plan`` (``chunks_of(text, text_l)``: the chunks of one entry's encoding, asked
    once per distinct text); ValueError when over ``MAX_SCHEDULE_ENTRY_CHUNKS``. Returns the total."""
    counts: dict[tuple[str, str | None], int] = {}
    total = 0
    for n, e in enumerate(plan.entries, 1):
        key = (e.text, e.text_l)
        if key not in counts:
            check_deadline(deadline)
            counts[key] = chunks_of(e.text, e.text_l)
        total += counts[key]
        if total > MAX_SCHEDULE_ENTRY_CHUNKS:  # said as soon as it is known: no more texts are counted
            more = "" if n == len(plan.entries) else f" in its first {n} of {len(plan.entries)}"
            raise ValueError(
                f"the prompt's conditioning entries hold {total} chunks of 77 tokens{more} (entries x chunks); "
                f"the limit is {MAX_SCHEDULE_ENTRY_CHUNKS}: shorten the prompt, or {SCHEDULE_FIX}"
            )
    return total


def and_note(weights: list[float]) -> str:
    """How ComfyUI's composition of AND sub-prompts differs from A1111's ('' without AND or weights)."""
    if len(weights) < 2 and all(w == 1.0 for w in weights):
        return ""
    total = sum(weights)
    listed = ", ".join(f"{w:g}" for w in weights)
    if total <= 0:
        return (f"AND weights {listed} sum to {total:g}: ComfyUI averages the entries by strength and cannot "
                "use a sum of 0 or less; A1111 sums the weighted guidance. Change the weights")
    return (f"AND: {len(weights)} sub-prompt(s), weights {listed}: ComfyUI averages the entries by strength "
            f"(divides by {total:g}), A1111 sums them: multiply the sampler's cfg by {total:g} for A1111's result")


def plan_report(plan: PromptPlan, count_tokens, percents: list[float] | None = None, *, chunks_of=None,
                deadline: Deadline | None = None) -> dict:
    """The plan as plain data (CLI ``--json``, the web route): ``steps`` (0 = not resolved), ``prompts``
    (distinct texts), ``has_syntax``, ``entries`` (each: ``start_step``/``end_step`` inclusive, or None when
    it covers every step; ``text``, ``text_l``, ``weight``, ``part``, ``tokens`` = ``count_tokens(text)``;
    with ``percents`` from ``sigma_schedule.step_percents``: ``start_percent``/``end_percent``) and ``notes``.

    ``chunks_of(text, text_l)``: when given, the entries x chunks are checked first (:func:`check_entry_chunks`),
    as the encoders check them. ``deadline``: checked before each text is counted."""
    if chunks_of is not None:
        check_entry_chunks(plan, chunks_of, deadline)
    entries = []
    counts: dict[str, int] = {}
    for e in plan.entries:
        if e.text not in counts:
            check_deadline(deadline)
            counts[e.text] = count_tokens(e.text)
        whole = plan.steps == 0 or (e.start_step == 0 and e.end_step == plan.steps)
        entry = {"start_step": None if plan.steps == 0 else e.start_step,
                 "end_step": None if plan.steps == 0 else e.end_step - 1,
                 "text": e.text, "text_l": e.text_l, "weight": e.weight, "part": e.part, "tokens": counts[e.text]}
        if percents is not None and not whole:
            entry["start_percent"], entry["end_percent"] = percents[e.start_step], percents[e.end_step]
        entries.append(entry)
    notes = plan.notes + [n for n in (and_note(plan.weights),) if n]
    prompts = len({(e.text, e.text_l) for e in plan.entries})
    return {"steps": plan.steps, "prompts": prompts, "has_syntax": plan.has_schedule, "entries": entries, "notes": notes}
