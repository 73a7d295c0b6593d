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
from .schedule import has_schedule_syntax, split_and, step_texts

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


def _runs(texts: list[tuple[str, str | None]]) -> list[tuple[int, int, tuple]]:
    """Consecutive equal items -> (start, end, item)."""
    out: list[tuple[int, int, tuple]] = []
    for i, item in enumerate(texts):
        if out and out[-1][2] == item:
            out[-1] = (out[-1][0], i + 1, item)
        else:
            out.append((i, i + 1, item))
    return out


def plan_prompt(text: str, *, weighting: str, steps: int = 0, text_l: str | None = None,
                sampler_steps: int | None = None) -> PromptPlan:
    """Plan ``text`` (and SDXL's separate ``text_l``; None or empty: CLIP-L uses ``text``).

    ``steps``: A1111's step count (0: schedules are not resolved). ``sampler_steps``: the steps the sampler
    runs with the chosen scheduler when that differs (a step past A1111's last uses the last text).
    """
    if steps < 0:
        raise ValueError(f"steps={steps}: use 0 (schedules not resolved) or the sampler's step count")
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
    has_schedule = any(has_schedule_syntax(t) for t, _ in parts) or bool(text_l and has_schedule_syntax(text_l))
    weights = [w for _, w in parts]
    if steps == 0:
        if has_schedule:
            notes.append("the prompt holds A1111 schedule syntax ([a:b:when], [a|b]): encoded as written; "
                         "set steps (and scheduler) to the sampler's to resolve it")
        entries = [PlanEntry(t, text_l, w, 0, 0, i) for i, (t, w) in enumerate(parts)]
        return PromptPlan(entries, 0, tags, has_schedule, weights, notes)
    n = sampler_steps or steps
    l_texts = step_texts(text_l, steps) if text_l else None
    entries = []
    for i, (part, weight) in enumerate(parts):
        texts = step_texts(part, steps)
        pairs = [(texts[min(s, steps - 1)], l_texts[min(s, steps - 1)] if l_texts else None) for s in range(n)]
        entries += [PlanEntry(t, tl, weight, a, b, i) for a, b, (t, tl) in _runs(pairs)]
    return PromptPlan(entries, n, tags, has_schedule, weights, notes)


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


def plan_report(plan: PromptPlan, count_tokens, percents: list[float] | None = None) -> dict:
    """The plan as plain data (CLI ``--json``, the web route): ``steps`` (0 = not resolved), ``prompts``
    (distinct texts), ``has_syntax``, ``entries`` (each: ``start_step``/``end_step`` inclusive, or None when
    it covers every step; ``text``, ``text_l``, ``weight``, ``part``, ``tokens`` = ``count_tokens(text)``;
    with ``percents`` from ``sigma_schedule.step_percents``: ``start_percent``/``end_percent``) and ``notes``."""
    entries = []
    counts: dict[str, int] = {}
    for e in plan.entries:
        if e.text not in counts:
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
