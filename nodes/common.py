"""What the node classes share: input specs with tooltips (in other tools' units), output declarations, and
status lines.

No host imports here: this is plain data and formatting, tested without ComfyUI.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

from ..clip_impl.text import CHUNKINGS, EMPTY_PROMPT_MODES, MAX_COMMA_BACKTRACK, POOLED_MODES, WEIGHTINGS, EncodedText
from ..clip_impl.clip_skip import APPLIES_TO, FAMILIES, TOWER_LABELS, from_set_last_layer
from ..clip_impl.a1111 import MAX_SCHEDULE_ENTRY_CHUNKS, MAX_SCHEDULE_TEXTS, MAX_STEPS, SCHEDULERS

CATEGORY = "CLIP Suite"
CLIP_TYPES = "CLIP_SUITE,CLIP"  # ComfyUI accepts either type on a comma-separated input
CLIP_SKIP_MIN, CLIP_SKIP_MAX = -1, 30  # widget range; each model's range is checked when the node runs
MAX_RESOLUTION = 16384  # ComfyUI's nodes.MAX_RESOLUTION, as CLIPTextEncodeSDXL uses it
NoFile = Literal["none"]
NO_FILE: NoFile = "none"  # the first choice of an optional file list (model_2, image, aesthetic_head): no file

CLIP_TOOLTIP = (
    "The text encoder: from 'Load CLIP (CLIP Suite)', or ComfyUI's own CLIP (Load Checkpoint, Load CLIP, "
    "DualCLIPLoader, LoRA loaders). A CLIPSetLastLayer setting on a ComfyUI CLIP is ignored: clip_skip decides."
)
CLIP_SKIP_TOOLTIP = (
    "Layers skipped beyond the model's native layer; 0 = the layer the model was trained with (no skip).\n"
    "SD1.x: A1111/Forge 'Clip skip: N' = ComfyUI CLIPSetLastLayer -N = clip_skip N-1 (so 'Clip skip 2' = 1); "
    "diffusers clip_skip k = k.\n"
    "SDXL: CLIPSetLastLayer -N = clip_skip N-2 (-2 or no node = 0; -1 = -1, the raw final layer); diffusers k = k; "
    "A1111's slider does nothing on SDXL (0) unless its option sdxl_clip_l_skip is on (then N-2 on clip_l only); "
    "Forge 'Clip skip N' = max(N,2)-2.\n"
    "SD2.x: CLIPSetLastLayer -N = clip_skip N-2. "
    "Range -1 (SD2/SDXL only) up to layer 1 of the shallowest tower (SD1.x 11, SDXL 10), checked when the node runs."
)
CHUNKING_TOOLTIP = (
    "How a long prompt is cut into 77-token chunks (75 prompt tokens each). comfy: exactly as ComfyUI's "
    "CLIPTextEncode. a1111: as AUTOMATIC1111/Forge: words after a comma near the chunk edge move to the next "
    "chunk (see comma_backtrack). BREAK always starts a new chunk."
)
COMMA_BACKTRACK_TOOLTIP = (
    "a1111 chunking only: A1111's setting 'Prompt word wrap length limit' (comma_padding_backtrack, default 20): "
    "when a chunk fills up and its last comma is at most this many tokens back, the words after it move to the "
    "next chunk. 0 turns it off: a hard cut every 75 tokens. (Forge and smZNodes always use 20.)"
)
WEIGHTING_TOOLTIP = (
    "Prompt weights like (word:1.2). comfy: ComfyUI's syntax and maths (moves a token away from the empty "
    "prompt's encoding; [x] is literal). a1111: A1111 syntax ((x) x1.1, [x] /1.1, nesting multiplies) with "
    "'Emphasis: Original' (z*w, then each chunk's mean restored). a1111_no_norm: A1111 'Emphasis: No norm'. "
    "none: brackets are plain text (only BREAK is special)."
)
POOLED_TOOLTIP = (
    "The pooled vector (SDXL's size/aesthetic input; unused by SD1.x UNets). first_chunk: from the first "
    "77-token chunk, as ComfyUI, A1111 and Forge do. mean: the mean over the prompt's chunks."
)
EMPTY_PROMPT_TOOLTIP = (
    "An empty prompt (typically the negative). encode: encode it like any text, as ComfyUI does. zeros: "
    "all-zero conditioning and pooled vector, as A1111 and diffusers (force_zeros_for_empty_prompt) do for SDXL."
)
APPLIES_TO_TOOLTIP = (
    "Which SDXL towers clip_skip changes. both: as ComfyUI CLIPSetLastLayer, Forge and diffusers. clip_l: as "
    "A1111 with its option sdxl_clip_l_skip on (CLIP-G stays at its native layer). clip_g: CLIP-G only."
)
STEPS_TOOLTIP = (
    "A1111 prompt editing and alternation ([from:to:when], [to:when], [from::when], [a|b]): the sampler's step "
    "count. 0 = not resolved: the prompt is encoded as written (the status says when it holds schedule syntax). "
    "With steps > 0 the conditioning is one entry per text, each with the timestep range of its steps, so a "
    "KSampler with the same steps and scheduler uses A1111's text at every step. "
    f"At most {MAX_STEPS} (KSampler's maximum; a linked value above it is refused). A schedule may need at most "
    f"{MAX_SCHEDULE_TEXTS} different texts and {MAX_SCHEDULE_ENTRY_CHUNKS} entries x chunks; beyond that the node "
    "stops with the count: lower steps or simplify the alternation."
)
SCHEDULER_TOOLTIP = (
    "The KSampler's scheduler (used only when steps > 0): the timestep ranges are placed between its sigmas."
)
SIZE_TOOLTIPS = {
    "width": "SDXL size conditioning, as CLIPTextEncodeSDXL's width: the original image width the model should imitate (diffusers original_size).",
    "height": "SDXL size conditioning, as CLIPTextEncodeSDXL's height (diffusers original_size).",
    "crop_w": "SDXL crop conditioning, as CLIPTextEncodeSDXL's crop_w (diffusers crops_coords_top_left); 0 = uncropped.",
    "crop_h": "SDXL crop conditioning, as CLIPTextEncodeSDXL's crop_h (diffusers crops_coords_top_left); 0 = uncropped.",
    "target_width": "SDXL target size, as CLIPTextEncodeSDXL's target_width (diffusers target_size).",
    "target_height": "SDXL target size, as CLIPTextEncodeSDXL's target_height (diffusers target_size).",
}
SIZE_DEFAULTS = {"width": 1024, "height": 1024, "crop_w": 0, "crop_h": 0, "target_width": 1024, "target_height": 1024}


@dataclass(frozen=True)
class Output:
    """One node output: its ComfyUI type (a type name, or a list of choices for a combo output), its name, its
    tooltip, and whether it is a list output (one value per item; the nodes fed by it run once per value)."""

    type: str | list[str]
    name: str
    tooltip: str
    is_list: bool = False


class DeclaredOutputs(NamedTuple):
    """ComfyUI's four output attributes, one entry per output, in order."""

    RETURN_TYPES: tuple
    RETURN_NAMES: tuple[str, ...]
    OUTPUT_TOOLTIPS: tuple[str, ...]
    OUTPUT_IS_LIST: tuple[bool, ...]


def declare_outputs(*outputs: Output) -> DeclaredOutputs:
    """A node's outputs, each declared once; in a class body:
    ``RETURN_TYPES, RETURN_NAMES, OUTPUT_TOOLTIPS, OUTPUT_IS_LIST = declare_outputs(Output(...), ...)``."""
    return DeclaredOutputs(
        tuple(o.type for o in outputs),
        tuple(o.name for o in outputs),
        tuple(o.tooltip for o in outputs),
        tuple(o.is_list for o in outputs),
    )


def scores_output(tooltip: str) -> Output:
    """``scores``: one FLOAT per image, a list output (the web extension shows it on the scoring nodes)."""
    return Output("FLOAT", "scores", tooltip, is_list=True)


def report_output(tooltip: str) -> Output:
    """``report``: the text a node also shows on itself."""
    return Output("STRING", "report", tooltip)


def batch_score_outputs(score: str, best: str, report: str) -> tuple[Output, ...]:
    """``scores``, ``mean``, ``best_index``, ``report``: the outputs of a node that scores every image of a batch.
    ``score`` names one score ("score", "aesthetic score"); ``best`` says which image best_index points at."""
    return (
        scores_output(f"One {score} per image, in batch order (a list: nodes fed by it run once per score)."),
        Output("FLOAT", "mean", f"The mean {score} of the batch."),
        Output("INT", "best_index", f"The index in the batch (from 0) of {best}, the first one on ties."),
        report_output(report),
    )


def text_input(tooltip: str) -> tuple:
    return ("STRING", {"multiline": True, "dynamicPrompts": True, "tooltip": tooltip})


def chunking_inputs() -> dict:
    """``chunking`` and ``comma_backtrack``, shared by the encoders and the token report."""
    return {
        "chunking": (list(CHUNKINGS), {"default": "comfy", "tooltip": CHUNKING_TOOLTIP}),
        "comma_backtrack": (
            "INT",
            {"default": 20, "min": 0, "max": MAX_COMMA_BACKTRACK, "step": 1, "tooltip": COMMA_BACKTRACK_TOOLTIP},
        ),
    }


def clip_skip_input() -> tuple:
    return ("INT", {"default": 0, "min": CLIP_SKIP_MIN, "max": CLIP_SKIP_MAX, "step": 1, "tooltip": CLIP_SKIP_TOOLTIP})


def encode_options() -> dict:
    """``weighting``, ``pooled``, ``empty_prompt``: the encoders' remaining options, in contract order."""
    return {
        "weighting": (list(WEIGHTINGS), {"default": "comfy", "tooltip": WEIGHTING_TOOLTIP}),
        "pooled": (list(POOLED_MODES), {"default": "first_chunk", "tooltip": POOLED_TOOLTIP}),
        "empty_prompt": (list(EMPTY_PROMPT_MODES), {"default": "encode", "tooltip": EMPTY_PROMPT_TOOLTIP}),
    }


def schedule_inputs() -> dict:
    """``steps`` and ``scheduler``: the encoders' optional A1111 schedule inputs (defaults keep old behaviour)."""
    return {
        "steps": ("INT", {"default": 0, "min": 0, "max": MAX_STEPS, "step": 1, "tooltip": STEPS_TOOLTIP}),
        "scheduler": (list(SCHEDULERS), {"default": "normal", "tooltip": SCHEDULER_TOOLTIP}),
    }


def applies_to_input() -> tuple:
    return (list(APPLIES_TO), {"default": "both", "tooltip": APPLIES_TO_TOOLTIP})


def size_inputs() -> dict:
    return {
        name: ("INT", {"default": SIZE_DEFAULTS[name], "min": 0, "max": MAX_RESOLUTION, "step": 1, "tooltip": tip})
        for name, tip in SIZE_TOOLTIPS.items()
    }


def status_text(out: EncodedText, clip_skip: int, label: str, notes=()) -> str:
    """The node's status after a run: model, chunks, layer per tower, notes and warnings (one per line)."""
    per_tower = ", ".join(f"{TOWER_LABELS.get(t, t)} {n}" for t, n in out.tower_chunks.items())
    chunk_word = "chunk" if out.chunks == 1 else "chunks"
    lines = [f"{label}: {out.chunks} {chunk_word}" + (f" ({per_tower})" if len(out.tower_chunks) > 1 else "")]
    layers = ", ".join(choice.describe(t) for t, choice in out.layers.items())
    lines.append(f"clip_skip {clip_skip}: {layers}")
    lines += [f"note: {n}" for n in notes if n]
    lines += [f"warning: {w}" for w in out.warnings]
    return "\n".join(lines)


def native_layer_note(native_layer: int | None, family_name: str, clip_skip: int) -> str | None:
    """Status note when the input CLIP carries a CLIPSetLastLayer setting, which our clip_skip overrides."""
    if native_layer is None:
        return None
    same = from_set_last_layer(FAMILIES[family_name], native_layer)
    verdict = "same layer" if same == clip_skip else f"that would be clip_skip {same}"
    return (
        f"input CLIP has CLIPSetLastLayer {native_layer}: ignored, clip_skip {clip_skip} decides the layer "
        f"({verdict})"
    )
