"""AUTOMATIC1111 compatibility beyond weighting: prompt editing and alternation per sampler step, the
sampler's step percents from ComfyUI's schedulers (computed without ComfyUI), ``<lora:...>`` and other
extra-network tags, AND, and the infotext reader with its clip-skip translation per family and UI.
"""

from .extra_networks import NetworkTag, find_tags, strip_tags
from .infotext import INFOTEXT_FAMILIES, A1111Settings, Infotext, parse_infotext, translate
from .plan import PlanEntry, PromptPlan, and_note, plan_prompt, plan_report
from .schedule import has_schedule_syntax, prompt_schedule, step_texts
from .sigmas import SCHEDULERS, step_percents

__all__ = [
    "NetworkTag", "find_tags", "strip_tags", "INFOTEXT_FAMILIES", "A1111Settings", "Infotext", "parse_infotext",
    "translate", "PlanEntry", "PromptPlan", "and_note", "plan_prompt", "plan_report", "has_schedule_syntax",
    "prompt_schedule", "step_texts", "SCHEDULERS", "step_percents",
]
