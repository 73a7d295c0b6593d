"""``ClipSuiteA1111Parameters``: an A1111/Forge infotext (pasted, or read from an image) as our settings.

The prompts come out exactly as A1111 stored them (schedules, AND and extra-network tags kept, so our
encoders resolve them); clip_skip is translated by ``clip_skip.from_a1111``/``from_forge`` for the
chosen family; ``Emphasis`` picks the weighting. The parsing lives in ``clip_impl/a1111/infotext.py``.
"""

from __future__ import annotations

import os

from ..clip_impl.text import CHUNKINGS, WEIGHTINGS
from ..clip_impl.clip_skip import APPLIES_TO
from ..clip_impl.images import a1111_parameters
from ..clip_impl.a1111 import INFOTEXT_FAMILIES, parse_infotext, translate
from . import common, host
from .common import NO_FILE, Output

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def input_images() -> list[str]:
    """Image files in the host's input folder (relative names, as LoadImage lists them)."""
    folder = host.get_host().input_directory()
    if not folder or not os.path.isdir(folder):
        return []
    return sorted(f for f in os.listdir(folder)
                  if f.lower().endswith(IMAGE_SUFFIXES) and os.path.isfile(os.path.join(folder, f)))


def read_image_parameters(name: str) -> str:
    """The ``parameters`` text of an image in the input folder; ValueError naming the file otherwise."""
    from PIL import Image, UnidentifiedImageError

    folder = host.get_host().input_directory()
    name = name.removesuffix(" [input]")
    if not folder:
        raise ValueError(f"image {name!r}: there is no input folder here; paste the parameters text instead")
    root = os.path.realpath(folder)
    path = os.path.realpath(os.path.join(root, name))
    if os.path.commonpath([root, path]) != root or not os.path.isfile(path):
        raise ValueError(f"image {name!r} is not in the input folder ({root}); upload it or pick another")
    try:
        with Image.open(path) as img:
            text = a1111_parameters(img)
    except (OSError, UnidentifiedImageError, SyntaxError) as e:
        raise ValueError(f"image {path}: cannot read it ({e}); use a PNG, JPEG or WebP saved by A1111/Forge") from None
    if not text:
        raise ValueError(f"image {path} holds no A1111 'parameters' (PNG text chunk or EXIF UserComment); "
                         "paste the infotext into 'parameters' instead")
    return text


class ClipSuiteA1111Parameters:
    """A1111 Parameters (CLIP Suite): the prompts and settings of an A1111/Forge image, for our encoders."""

    DESCRIPTION = (
        "Reads an A1111/Forge infotext (the 'parameters' text under an image, pasted, or read from an image's "
        "metadata) and outputs the prompts as A1111 encoded them (schedules, AND and LoRA tags kept for our encoders "
        "to resolve), clip_skip translated to CLIP Suite's convention for the model family (A1111 and Forge told "
        "apart by the Version field), the weighting from Emphasis, steps, cfg, seed and size. The report lists "
        "every field read and every translation. Values ComfyUI's own widgets would not take (steps outside "
        "1..10000, cfg outside 0..100, a seed outside 0..2^64-1, a size outside 16..16384, a Clip skip beyond the "
        "model's layers) are replaced by the defaults, and the report says which and why."
    )
    CATEGORY = common.CATEGORY
    RETURN_TYPES, RETURN_NAMES, OUTPUT_TOOLTIPS, OUTPUT_IS_LIST = common.declare_outputs(
        Output("STRING", "positive",
               "The prompt as A1111 encoded it (schedules, AND and <lora:...> tags kept: our encoders resolve them)."),
        Output("STRING", "negative", "The negative prompt ('' when the infotext has none)."),
        Output("INT", "clip_skip",
               "CLIP skip in CLIP Suite's convention for the chosen family (A1111 'Clip skip 2' on SD1.x = 1)."),
        Output(list(APPLIES_TO), "clip_skip_applies_to", "Which SDXL towers clip_skip applies to."),
        Output(list(WEIGHTINGS), "weighting",
               "From Emphasis: Original (or absent) = a1111, No norm = a1111_no_norm, None = none."),
        Output(list(CHUNKINGS), "chunking", "Always a1111: A1111's chunking with comma backtrack."),
        Output("INT", "steps", "Sampling steps (feed the encoders' steps and the KSampler's)."),
        Output("FLOAT", "cfg", "CFG scale."),
        Output("INT", "seed", "Seed."),
        Output("INT", "width", "Image width."),
        Output("INT", "height", "Image height."),
        Output("STRING", "lora_tags",
               "The LoRA tags of the prompt, one name:weight a line: load them with a LoRA loader."),
        common.report_output("What was read and every translation made, one per line; unreadable fields are named."),
    )
    FUNCTION = "read"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "parameters": ("STRING", {
                    "multiline": True, "default": "",
                    "tooltip": "An A1111/Forge infotext, pasted: prompt, 'Negative prompt: ...', then the "
                               "'Steps: ..., Sampler: ..., Clip skip: ...' line. Empty: read it from the image.",
                }),
                "family": (list(INFOTEXT_FAMILIES), {
                    "default": "sd1",
                    "tooltip": "The model family the image was made with: decides how 'Clip skip' translates "
                               "(SD1.x N-1; SDXL: A1111 ignores it, Forge max(N,2)-2; SD2.x: A1111 ignores it).",
                }),
            },
            "optional": {
                "image": ([NO_FILE] + input_images(), {
                    "default": NO_FILE, "image_upload": True,
                    "tooltip": "An image in ComfyUI's input folder (upload one here, as in Load Image): its "
                               "A1111 'parameters' metadata is read when the parameters text is empty.",
                }),
            },
        }

    def read(self, parameters, family, image=NO_FILE):
        text, source = parameters, "pasted parameters"
        if not parameters.strip() and image and image != NO_FILE:
            text, source = read_image_parameters(image), f"image {image}"
        s = translate(parse_infotext(text), family)
        report = "\n".join([f"source: {source}"] + s.report)
        result = (s.positive, s.negative, s.clip_skip, s.clip_skip_applies_to, s.weighting, s.chunking, s.steps,
                  s.cfg, s.seed, s.width, s.height, "\n".join(s.lora_tags), report)
        return {"ui": {"text": [report]}, "result": result}
