"""``ClipSuiteTextEncode`` and ``ClipSuiteTextEncodeSDXL``: prompts to CONDITIONING with CLIP skip.

The node methods only convert inputs to :class:`EncodeSettings`; :func:`run_encode` hands the prompt to the
library's one scheduled encode (``encode_scheduled``: A1111 tags, AND and schedules resolved, each distinct
text encoded once) with the host's model, cache and embeddings, and packages the entries as ComfyUI's
samplers take them: ``[[cond (1, 77*chunks, C), {"pooled_output": (1, P), ...}]]``.
Embedding references resolve in the host's embeddings folders (ComfyUI's ``models/embeddings``).
"""

from __future__ import annotations

from dataclasses import replace

from ..clip_impl.clip_skip import FAMILIES, layer_table
from ..clip_impl.text import EncodeSettings
from ..clip_impl.a1111 import ScheduledEncoding, encode_scheduled
from . import common, host

_CONDITIONING_TOOLTIP = "Conditioning for KSampler's positive or negative input (as CLIPTextEncode's)."


def run_encode(clip, text: str, settings: EncodeSettings, steps: int = 0, scheduler: str = "normal",
               text_l: str | None = None, families=None) -> tuple[ScheduledEncoding, str]:
    """Encode with the host: the host's model (refused unless its family is in ``families``) through
    :func:`encode_scheduled`. Returns (the ScheduledEncoding with every cond (1, 77*chunks, C) and pooled
    (1, P) on ComfyUI's intermediate device, status text: the first entry's encoding and host notes, then
    the schedule lines)."""
    h = host.get_host()
    hosted = h.clip_for(clip)
    family = hosted.model.family
    if families is not None and family.name not in families:
        raise ValueError(
            f"clip input holds {family.label} text encoders; this node is for SDXL (CLIP-L + CLIP-G). "
            "Use 'CLIP Text Encode (CLIP skip, long prompts)' for other models"
        )
    h.prepare(hosted)
    result = encode_scheduled(hosted.model, text, settings, steps, scheduler, text_l=text_l,
                              cache=h.chunk_cache(hosted), embeddings=h.embedding_library())
    for out in result.encoded.values():  # once per distinct text, so its entries keep sharing one tensor
        out.cond, out.pooled = h.output(out.cond), h.output(out.pooled)
    notes = [common.native_layer_note(hosted.native_layer, family.name, settings.clip_skip), *hosted.notes]
    if result.entries[0].text_l and family.name != "sdxl":
        notes.append(f"text_l is unused: {family.label} has no CLIP-L")
    status = common.status_text(result.first, settings.clip_skip, family.label, notes)
    return result, "\n".join([status, *result.status_lines])


def encode_planned(clip, text: str, settings: EncodeSettings, steps: int, scheduler: str, text_l: str | None = None,
                   families=None, extra: dict | None = None):
    """A1111 prompts: tags, AND and (steps > 0) schedules resolved, each distinct text encoded once
    (:func:`run_encode`). Returns (conditioning list, first EncodedText, status text).

    Entries carry ``start_percent``/``end_percent`` (as ConditioningSetTimestepRange writes them) when they
    cover part of the steps, and ``strength`` (= the AND weight) when the prompt is composed with AND."""
    result, status = run_encode(clip, text, settings, steps, scheduler, text_l=text_l, families=families)
    conditioning = []
    for entry in result.entries:
        options = {"pooled_output": entry.encoded.pooled, **(extra or {})}
        if entry.start_percent is not None:
            options["start_percent"], options["end_percent"] = entry.start_percent, entry.end_percent
        if entry.strength is not None:
            options["strength"] = entry.strength
        conditioning.append([entry.encoded.cond, options])
    return conditioning, result.first, status


def web_info(out, settings: EncodeSettings) -> dict:
    """The node's ``ui["clip_suite"]`` entry for the web extension: the model family, each tower's depth and
    chosen layer, and ``table``: the layers every other clip_skip would select on this model
    (``clip_skip.layer_table``), so the page shows them before the next run without a copy of the rules."""
    layers = {t: {"layer": c.layer, "layer_norm": c.layer_norm, "num_layers": c.num_layers}
              for t, c in out.layers.items()}
    tower_layers = {t: c.num_layers for t, c in out.layers.items()}
    family = replace(FAMILIES[out.family], towers=tuple(tower_layers))  # a full CLIP's one tower may be "h"
    return {"family": out.family, "clip_skip": settings.clip_skip, "applies_to": settings.clip_skip_applies_to,
            "layers": layers, "table": layer_table(family, tower_layers)}


class ClipSuiteTextEncode:
    """CLIP Text Encode (CLIP skip, long prompts): one prompt for any SD1.x/SD2.x/SDXL text encoder."""

    DESCRIPTION = (
        "Encodes a prompt like CLIPTextEncode, with a CLIP-skip setting that means the same on every model "
        "(0 = the model's native layer), prompts of any length in 77-token chunks, BREAK, and ComfyUI or A1111 "
        "weighting. Shows the layers used, the chunk count and warnings on the node."
    )
    CATEGORY = common.CATEGORY
    RETURN_TYPES, RETURN_NAMES, OUTPUT_TOOLTIPS, OUTPUT_IS_LIST = common.declare_outputs(
        common.Output("CONDITIONING", "CONDITIONING", _CONDITIONING_TOOLTIP),  # named as ComfyUI names it unnamed
    )
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "clip": (common.CLIP_TYPES, {"tooltip": common.CLIP_TOOLTIP}),
                "text": common.text_input(
                    "The prompt. BREAK starts a new 77-token chunk; (word:1.2) weights a word; embedding:name uses an "
                    "embedding from the embeddings folder (with a1111 weighting: its bare name)."
                ),
                "clip_skip": common.clip_skip_input(),
                **common.chunking_inputs(),
                **common.encode_options(),
            },
            "optional": common.schedule_inputs(),
        }

    def encode(self, clip, text, clip_skip, chunking, comma_backtrack, weighting, pooled, empty_prompt,
               steps=0, scheduler="normal"):
        settings = EncodeSettings(
            clip_skip=clip_skip, chunking=chunking, comma_backtrack=comma_backtrack, weighting=weighting,
            pooled=pooled, empty_prompt=empty_prompt,
        )
        conditioning, out, status = encode_planned(clip, text, settings, steps, scheduler)
        return {"ui": {"text": [status], "clip_suite": [web_info(out, settings)]}, "result": (conditioning,)}


class ClipSuiteTextEncodeSDXL:
    """SDXL Text Encode (CLIP skip, long prompts): CLIPTextEncodeSDXL with CLIP skip and long prompts."""

    DESCRIPTION = (
        "SDXL's CLIPTextEncodeSDXL with CLIP skip (0 = SDXL's native penultimate layer; applied to both towers or "
        "one), prompts of any length, BREAK, ComfyUI or A1111 weighting, and an optional separate CLIP-L prompt. "
        "Adds the size conditioning (width, height, crops, target size) to the pooled output."
    )
    CATEGORY = common.CATEGORY
    RETURN_TYPES, RETURN_NAMES, OUTPUT_TOOLTIPS, OUTPUT_IS_LIST = common.declare_outputs(
        common.Output("CONDITIONING", "CONDITIONING", _CONDITIONING_TOOLTIP + " Carries SDXL's size conditioning."),
    )
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "clip": (common.CLIP_TYPES, {"tooltip": common.CLIP_TOOLTIP}),
                "text_g": common.text_input(
                    "The prompt (CLIPTextEncodeSDXL's text_g): for CLIP-G, and for CLIP-L too when text_l is empty. "
                    "embedding:name uses an embedding from the embeddings folder (with a1111 weighting: its bare name)."
                ),
                "text_l": common.text_input(
                    "A separate prompt for CLIP-L (CLIPTextEncodeSDXL's text_l). Empty: use text_g, as A1111, Forge "
                    "and diffusers (one prompt for both towers) do."
                ),
                "clip_skip": common.clip_skip_input(),
                "clip_skip_applies_to": common.applies_to_input(),
                **common.chunking_inputs(),
                **common.encode_options(),
                **common.size_inputs(),
            },
            "optional": common.schedule_inputs(),
        }

    def encode(self, clip, text_g, text_l, clip_skip, clip_skip_applies_to, chunking, comma_backtrack, weighting,
               pooled, empty_prompt, width, height, crop_w, crop_h, target_width, target_height,
               steps=0, scheduler="normal"):
        settings = EncodeSettings(
            clip_skip=clip_skip, clip_skip_applies_to=clip_skip_applies_to, chunking=chunking,
            comma_backtrack=comma_backtrack, weighting=weighting, pooled=pooled, empty_prompt=empty_prompt,
        )
        extra = {"width": width, "height": height, "crop_w": crop_w, "crop_h": crop_h,
                 "target_width": target_width, "target_height": target_height}
        conditioning, out, status = encode_planned(
            clip, text_g, settings, steps, scheduler, text_l=text_l, families=("sdxl", "sdxl_refiner"), extra=extra
        )
        return {"ui": {"text": [status], "clip_suite": [web_info(out, settings)]}, "result": (conditioning,)}
