"""``ClipSuiteLoader``: load text encoders (and a vision tower) from ComfyUI's model folders."""

from __future__ import annotations

from ..clip_impl.weights import ARCHITECTURES, PRECISIONS
from . import host
from .common import CATEGORY, NO_FILE, Output, declare_outputs


class ClipSuiteLoader:
    """Load CLIP (CLIP Suite): a checkpoint, a text encoder, a clip_l + clip_g pair or a full CLIP model."""

    DESCRIPTION = (
        "Loads the CLIP text encoders of a checkpoint (SD1.x, SD2.x, SDXL base or refiner), of standalone text "
        "encoder files (clip_l + clip_g as two files, like DualCLIPLoader) or of a full CLIP model. The "
        "architecture is detected from the weights, and only the text encoders are read from a checkpoint. "
        "Loading the same file twice shares one set of weights; ComfyUI's model management moves them."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES, RETURN_NAMES, OUTPUT_TOOLTIPS, OUTPUT_IS_LIST = declare_outputs(
        Output("CLIP_SUITE", "clip",
               "The loaded text encoders, for CLIP Suite's encoders (ComfyUI's own nodes do not take it)."),
    )
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        choices = host.get_host().model_choices()
        return {
            "required": {
                "model": (choices, {"tooltip": (
                    "A file from ComfyUI's model folders, as folder/name: checkpoints/ (what Load Checkpoint reads), "
                    "text_encoders/ (also models/clip; what Load CLIP and DualCLIPLoader read), clip_vision/, or a "
                    "diffusers/ pipeline folder.")}),
                "model_2": ([NO_FILE] + choices, {"default": NO_FILE, "tooltip": (
                    "A second file: SDXL's clip_g next to clip_l (like DualCLIPLoader with type sdxl), or a "
                    "clip_vision file of the same CLIP as the text encoder (for scoring). none: only model.")}),
                "architecture": (list(ARCHITECTURES), {"default": "auto", "tooltip": (
                    "auto: detected from the weights (never from the file name). sd1 = Load CLIP type "
                    "stable_diffusion (CLIP-L), sd2 = stable_diffusion with ViT-H, sdxl = DualCLIPLoader type sdxl "
                    "(CLIP-L + CLIP-G), sdxl_refiner = CLIP-G alone, clip = a full image-text CLIP model.")}),
                "precision": (list(PRECISIONS), {"default": "auto", "tooltip": (
                    "auto: ComfyUI's numbers (weights in ComfyUI's text-encoder dtype, fp16 by default, computed in "
                    "fp32), so results match CLIPTextEncode. fp32: the file's exact values. fp16/bf16: stored and "
                    "computed in that type (less memory, faster on GPUs, slightly different numbers).")}),
                "device": (list(host.DEVICES), {"default": "auto", "tooltip": (
                    "auto: where ComfyUI runs text encoders (its model management moves them, as for Load CLIP). "
                    "cpu: always on the CPU (Load CLIP's device=cpu). gpu: ComfyUI's main device.")}),
            }
        }

    def load(self, model, model_2, architecture, precision, device):
        h = host.get_host()
        paths = [h.resolve_model(model)] + ([h.resolve_model(model_2)] if model_2 != NO_FILE else [])
        # A clip_vision file must give a vision tower; a full CLIP file brings its own ("auto").
        with_vision = True if any(c.startswith("clip_vision/") for c in (model, model_2)) else "auto"
        hosted = h.load(paths, architecture, precision, device, with_vision=with_vision)
        status = "\n".join([hosted.model.describe()] + [f"note: {n}" for n in hosted.notes])
        return {"ui": {"text": [status]}, "result": (hosted,)}
