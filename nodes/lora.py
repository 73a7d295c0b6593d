"""``ClipSuiteLoraLoader``: apply a LoRA's text-encoder part to CLIP Suite's towers (``clip_impl/weights/lora.py``).

For ComfyUI's own CLIP, ComfyUI's ``LoraLoader`` does the job: connect its CLIP output to our encoders,
which read the patched weights (``host.ComfyHost.from_native``). This node is for our loader's output.
"""

from __future__ import annotations

import os

from ..clip_impl.weights import apply_loras, read_lora
from . import common, host

LORA_FOLDER = "loras"
STRENGTH_MIN, STRENGTH_MAX = -100.0, 100.0  # LoraLoader's strength_clip range, so values copy over


def lora_choices() -> list[str]:
    """LoRA files in the host's ``loras`` folders (names relative to the folder, as LoraLoader lists them)."""
    h = host.get_host()
    return sorted(n for n in h.folder_files(LORA_FOLDER) if n.lower().endswith(host.READABLE_SUFFIXES))


def resolve_lora(name: str) -> str:
    """The path of a LoRA listed by :func:`lora_choices`; ValueError naming the folders if it is missing."""
    h = host.get_host()
    roots = h.search_paths(LORA_FOLDER)
    for root in roots:
        path = os.path.realpath(os.path.join(root, os.path.normpath(name)))
        inside = path.startswith(os.path.realpath(root) + os.sep)
        if inside and os.path.isfile(path):
            return path
    where = ", ".join(roots) or "no loras folder configured"
    raise ValueError(f"lora_name {name!r} is not in the loras folders ({where}); put the file there or pick another")


class ClipSuiteLoraLoader:
    """Apply LoRA to CLIP (CLIP Suite): a LoRA's text-encoder weights on our loader's towers."""

    DESCRIPTION = (
        "Applies the text-encoder part of a LoRA (kohya lora_te/lora_te1/lora_te2 or diffusers/PEFT "
        "text_encoder/text_encoder_2 keys) to CLIP Suite's text encoders, with the same maths and rounding as "
        "ComfyUI's LoraLoader, so the encoders give what CLIPTextEncode gives after LoraLoader. Chain several "
        "nodes for several LoRAs. For ComfyUI's own CLIP, use LoraLoader and connect its CLIP to our encoders."
    )
    CATEGORY = common.CATEGORY
    RETURN_TYPES, RETURN_NAMES, OUTPUT_TOOLTIPS, OUTPUT_IS_LIST = common.declare_outputs(
        common.Output("CLIP_SUITE", "clip", "The text encoders with the LoRA applied (the input is left unchanged)."),
    )
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "clip": ("CLIP_SUITE", {"tooltip": "From 'Load CLIP (CLIP Suite)' or another LoRA node of ours."}),
                "lora_name": (lora_choices(), {
                    "tooltip": "A LoRA from ComfyUI's loras folder (as LoraLoader lists them)."}),
                "strength": ("FLOAT", {
                    "default": 1.0, "min": STRENGTH_MIN, "max": STRENGTH_MAX, "step": 0.01,
                    "tooltip": "How strongly the LoRA changes the text encoders: LoraLoader's strength_clip. "
                               "0 leaves them unchanged; negative values are allowed."}),
            }
        }

    def apply(self, clip, lora_name, strength):
        h = host.get_host()
        if not isinstance(clip, host.HostedClip):
            raise TypeError(
                f"clip input: expected CLIP Suite's loader output, got {type(clip).__name__}; for ComfyUI's CLIP use "
                "LoraLoader and connect its CLIP output to CLIP Suite's encoders"
            )
        lora = read_lora(resolve_lora(lora_name))
        result = apply_loras(clip.model, [(lora, strength)], device=h.storage_device(clip))
        hosted = clip if result.model is clip.model else h.derive(clip, result.model)
        status = "\n".join([hosted.model.describe()] + result.notes + [f"warning: {w}" for w in result.warnings])
        return {"ui": {"text": [status]}, "result": (hosted,)}
