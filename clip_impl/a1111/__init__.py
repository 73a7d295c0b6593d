"""AUTOMATIC1111 compatibility beyond weighting: prompt editing and alternation per sampler step, the
sampler's step percents from ComfyUI's schedulers (computed without ComfyUI), ``<lora:...>`` and other
extra-network tags, AND, and the infotext reader with its clip-skip translation per family and UI.
"""

from .extra_networks import NetworkTag, find_tags, strip_tags
from .infotext import INFOTEXT_FAMILIES, A1111Settings, InfotextFamily, Infotext, parse_infotext, translate
from .limits import (
    MAX_SCHEDULE_CHARS, MAX_SCHEDULE_ENTRY_CHUNKS, MAX_SCHEDULE_TEXTS, MAX_STEPS, BudgetExceeded, Deadline, check_steps,
)
from .plan import PlanEntry, PromptPlan, and_note, check_entry_chunks, plan_prompt, plan_report
from .schedule import has_schedule_syntax, prompt_schedule, step_texts
from .scheduled import ScheduledEncoding, ScheduledEntry, encode_scheduled, schedule_status
from .sigmas import SCHEDULERS, Scheduler, step_percents

__all__ = [
    "NetworkTag", "find_tags", "strip_tags", "INFOTEXT_FAMILIES", "InfotextFamily", "A1111Settings", "Infotext",
    "parse_infotext",
    "translate", "PlanEntry", "PromptPlan", "and_note", "plan_prompt", "plan_report", "has_schedule_syntax",
    "prompt_schedule", "step_texts", "SCHEDULERS", "Scheduler", "step_percents",
    "ScheduledEncoding", "ScheduledEntry", "encode_scheduled", "schedule_status",
    "MAX_STEPS", "MAX_SCHEDULE_TEXTS", "MAX_SCHEDULE_ENTRY_CHUNKS", "MAX_SCHEDULE_CHARS", "BudgetExceeded", "Deadline",
    "check_steps", "check_entry_chunks",
]
