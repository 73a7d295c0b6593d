"""One prompt encoded for a sampling run as A1111 uses it: the plan (tags, ``AND``, prompt editing and
alternation per sampler step), each distinct text encoded once, and the conditioning entries with their
timestep ranges.

The encoder nodes and ``clip_suite encode`` both call :func:`encode_scheduled` once and only package its
result (the nodes: ComfyUI's conditioning list on the host's devices; the command line: a .safetensors
file), so the two cannot drift apart in which texts they encode or which ranges they give them.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..cache import CHUNK_CACHE, ByteLRUCache
from ..model import ClipModel
from ..text import EncodedText, EncodeSettings, encode_prompt, prompt_chunks
from .plan import PromptPlan, and_note, check_entry_chunks, plan_prompt
from .sigmas import step_percents

LISTED_ENTRIES = 12  # entries listed one per line in the status; a long alternation would fill the node


# eq=False: the fields hold tensors, which have no single truth value to compare by; identity is what
# matters (entries of one text share one EncodedText).
@dataclass(frozen=True, eq=False)
class ScheduledEntry:
    """One conditioning entry: ``encoded`` (cond (1, 77*chunks, C), pooled (1, P); the same object for every
    entry of one ``(text, text_l)``) used on sampler steps ``start_step``..``end_step - 1``.

    ``start_percent``/``end_percent``: the timestep range (as ConditioningSetTimestepRange writes it) when
    the entry covers part of the steps, else None. ``strength``: the ``AND`` weight when the prompt is
    composed with ``AND`` or weighted, else None (ComfyUI's default strength 1.0 applies).
    """

    encoded: EncodedText
    text: str
    text_l: str | None
    start_step: int
    end_step: int
    start_percent: float | None = None
    end_percent: float | None = None
    strength: float | None = None


@dataclass(frozen=True, eq=False)
class ScheduledEncoding:
    """What :func:`encode_scheduled` returns.

    ``entries``: one per plan entry, in the plan's order. ``first``: the first entry's EncodedText (the
    prompt's encoding when it has one entry). ``plan``: the :class:`PromptPlan` the entries follow (re-planned
    for the scheduler's step count when it differs from ``steps``). ``percents``: ``step_percents(scheduler,
    steps)`` when the plan is scheduled, else None. ``status_lines``: the schedule summary and the plan's
    notes, one per line, to follow the encoding's own status.
    """

    entries: tuple[ScheduledEntry, ...]
    first: EncodedText
    plan: PromptPlan
    percents: tuple[float, ...] | None
    steps: int
    scheduler: str
    status_lines: tuple[str, ...]

    @property
    def encoded(self) -> dict[tuple[str, str | None], EncodedText]:
        """The distinct encodings by ``(text, text_l)``, in order of first use."""
        return {(e.text, e.text_l): e.encoded for e in self.entries}


def encode_scheduled(
    model: ClipModel,
    text: str,
    settings: EncodeSettings,
    steps: int = 0,
    scheduler: str = "normal",
    text_l: str | None = None,
    cache: ByteLRUCache | None = CHUNK_CACHE,
    embeddings=None,
) -> ScheduledEncoding:
    """Plan ``text`` (SDXL: and the CLIP-L ``text_l``) for a run of ``steps`` sampler steps with ``scheduler``
    (``steps`` = 0: schedules are not resolved, one entry per ``AND`` sub-prompt), encode each distinct text
    once with :func:`encode_prompt` (``cache``, ``embeddings`` as there) and give every entry its timestep
    range and strength.

    Each entry's ``encoded`` holds cond (1, 77*chunks, C) and pooled (1, P), float32 on the towers' device.
    Raises ValueError for steps outside 0..MAX_STEPS, when the scheduler's sigmas cannot separate two steps,
    and for schedules over the limits of :mod:`.limits` (different texts, entries x chunks: checked before
    anything is encoded).
    """
    plan = plan_prompt(text, weighting=settings.weighting, steps=steps, text_l=text_l)
    percents = None
    if plan.scheduled:  # sigmas only for prompts that need timestep ranges
        percents = tuple(step_percents(scheduler, steps))
        if len(percents) - 1 != steps:  # e.g. ddim_uniform runs 31 steps for 30: entries must cover them all
            plan = plan_prompt(text, weighting=settings.weighting, steps=steps, text_l=text_l,
                               sampler_steps=len(percents) - 1)
    if len(plan.entries) > 1:  # a schedule or AND multiplies the chunks: count them before encoding any
        check_entry_chunks(plan, lambda t, tl: _chunks(model, t, tl, settings, embeddings))
    encoded: dict[tuple[str, str | None], EncodedText] = {}
    entries = []
    for entry in plan.entries:
        key = (entry.text, entry.text_l)
        if key not in encoded:  # alternation repeats texts: each is encoded once and shared
            encoded[key] = encode_prompt(model, entry.text, settings, text_l=entry.text_l, cache=cache,
                                         embeddings=embeddings)
        start = end = None
        if percents is not None and (entry.start_step > 0 or entry.end_step < plan.steps):
            start, end = percents[entry.start_step], percents[entry.end_step]
        # A lone weight-1 prompt keeps ComfyUI's plain entry (no strength key), as CLIPTextEncode's output.
        strength = entry.weight if len(plan.weights) > 1 or entry.weight != 1.0 else None
        entries.append(ScheduledEntry(encoded[key], entry.text, entry.text_l, entry.start_step, entry.end_step,
                                      start, end, strength))
    return ScheduledEncoding(tuple(entries), entries[0].encoded, plan, percents, steps, scheduler,
                             tuple(schedule_status(plan, scheduler, steps)))


def _chunks(model: ClipModel, text: str, text_l: str | None, settings: EncodeSettings, embeddings) -> int:
    """The chunks :func:`encode_prompt` will give ``text`` (SDXL: ``text_l`` on CLIP-L): its longest tower's."""
    family = model.family
    out = 1
    for tower in family.towers:
        own = text_l if tower == "l" and text_l and family.name == "sdxl" else text
        found = prompt_chunks(own, chunking=settings.chunking, comma_backtrack=settings.comma_backtrack,
                              weighting=settings.weighting, embeddings=embeddings, tower=tower,
                              width=model.towers[tower].config.width)
        out = max(out, len(found.chunks))
    return out


def schedule_status(plan: PromptPlan, scheduler: str, steps: int) -> list[str]:
    """Status lines for ``plan``: when scheduled, a summary and up to ``LISTED_ENTRIES`` entries (steps
    inclusive, text cut at 60 characters), a note when the scheduler runs another step count than ``steps``;
    then the plan's notes and the ``AND`` note."""
    lines = []
    if plan.scheduled:
        texts = len({(e.text, e.text_l) for e in plan.entries})
        lines.append(f"schedule: {texts} prompt{'s' if texts != 1 else ''} over {steps} steps ({scheduler}), "
                     f"{len(plan.entries)} entries")
        if plan.steps != steps:
            lines.append(f"note: scheduler {scheduler} runs {plan.steps} steps for steps={steps}; "
                         "steps past A1111's last use its last text")
        for e in plan.entries[:LISTED_ENTRIES]:
            shown = e.text if len(e.text) <= 60 else e.text[:57] + "..."
            lines.append(f"  steps {e.start_step}-{e.end_step - 1}: {shown!r}")
        if len(plan.entries) > LISTED_ENTRIES:
            lines.append(f"  ... {len(plan.entries) - LISTED_ENTRIES} more entries")
    lines += [f"note: {n}" for n in plan.notes + [and_note(plan.weights)] if n]
    return lines
