"""The limits on what a prompt schedule may ask for, and the time budget that long loops check.

Every count a user controls is checked before any work is sized from it:

- ``steps``: at most :data:`MAX_STEPS` (ComfyUI's KSampler takes 1..10000; 0 = schedules not resolved).
- A schedule (prompt editing ``[a:b:when]``, alternation ``[a|b]``, ``AND``) is refused, naming the count,
  the limit and the fix, when it needs more than :data:`MAX_SCHEDULE_TEXTS` different texts (each is
  encoded on its own), more than :data:`MAX_SCHEDULE_ENTRY_CHUNKS` entries x chunks (the conditioning
  ComfyUI's sampler walks at every step, and the tensors ``encode`` writes: one alternation ``[a|b]`` of a
  one-chunk prompt is fine up to 2049 steps), or more than :data:`MAX_SCHEDULE_CHARS` characters of text
  over all its entries (what a report of the schedule repeats). Real prompts stay far below: 20-150 steps
  give a few texts and at most one entry per step.

:class:`Deadline` is a time budget that the planning and counting loops check between units of work, so
that work given up by its caller (the web route answers 503 when its budget ends) stops soon after.
"""

from __future__ import annotations

import operator
import time

MAX_STEPS = 10_000  # ComfyUI's KSampler steps maximum (its widget's max)
MAX_SCHEDULE_TEXTS = 256  # different texts one prompt's schedule may need encoded
# entries x 77-token chunks of one prompt's conditioning: what is encoded at most (each different text once),
# what ComfyUI's sampler walks at every step, and what `encode` writes (an SDXL chunk is 630 KB in float32)
MAX_SCHEDULE_ENTRY_CHUNKS = 2048
MAX_SCHEDULE_CHARS = 2**24  # characters of text over all entries of one schedule (16,777,216)
SCHEDULE_FIX = "lower steps or simplify the alternations ([a|b]) and prompt edits ([a:b:when])"


def check_steps(steps, *, minimum: int = 0, name: str = "steps") -> int:
    """``steps`` as an int in ``minimum``..MAX_STEPS; ValueError naming the value and the range otherwise."""
    try:
        value = operator.index(steps)  # an int (or numpy integer), not a float or a bool-like string
    except TypeError:
        raise ValueError(f"{name}={steps!r}: use a whole number {minimum}..{MAX_STEPS}") from None
    if isinstance(steps, bool) or not minimum <= value <= MAX_STEPS:
        shown = repr(steps) if isinstance(steps, bool) else str(value)
        what = "at least 1 step" if minimum == 1 else "0 = schedules not resolved, else the sampler's step count"
        raise ValueError(
            f"{name}={shown} is out of range: use {minimum}..{MAX_STEPS} ({what}; {MAX_STEPS} is the most "
            "ComfyUI's KSampler takes)"
        )
    return value


class BudgetExceeded(TimeoutError):
    """Work stopped because its :class:`Deadline` passed."""


class Deadline:
    """A time budget of ``seconds`` from now (None: no limit); :meth:`check` raises BudgetExceeded once it
    has passed. Long loops call it between units of work (a text parsed, a text tokenized)."""

    def __init__(self, seconds: float | None, what: str = "the work"):
        self.seconds = seconds
        self.what = what
        self.end = None if seconds is None else time.monotonic() + seconds

    @property
    def expired(self) -> bool:
        """Whether the budget has passed."""
        return self.end is not None and time.monotonic() >= self.end

    def check(self) -> None:
        """Raise :class:`BudgetExceeded` when the budget has passed."""
        if self.expired:
            raise BudgetExceeded(f"{self.what} took more than {self.seconds:g} s and was stopped")


def check_deadline(deadline: Deadline | None) -> None:
    """``deadline.check()`` when there is one."""
    if deadline is not None:
        deadline.check()
