"""ComfyUI node classes (thin adapters over ``clip_impl``); ``host.py`` is the only ComfyUI-facing module."""

from .a1111_parameters import ClipSuiteA1111Parameters
from .aesthetic import ClipSuiteAestheticScore
from .loader import ClipSuiteLoader
from .lora import ClipSuiteLoraLoader
from .prompt_tokens import ClipSuitePromptTokens
from .similarity import ClipSuiteImageTextSimilarity, ClipSuiteSelectBest
from .text_encode import ClipSuiteTextEncode, ClipSuiteTextEncodeSDXL
from .zero_shot import ClipSuiteZeroShot

NODE_CLASS_MAPPINGS = {
    "ClipSuiteLoader": ClipSuiteLoader,
    "ClipSuiteLoraLoader": ClipSuiteLoraLoader,
    "ClipSuiteTextEncode": ClipSuiteTextEncode,
    "ClipSuiteTextEncodeSDXL": ClipSuiteTextEncodeSDXL,
    "ClipSuitePromptTokens": ClipSuitePromptTokens,
    "ClipSuiteImageTextSimilarity": ClipSuiteImageTextSimilarity,
    "ClipSuiteSelectBest": ClipSuiteSelectBest,
    "ClipSuiteAestheticScore": ClipSuiteAestheticScore,
    "ClipSuiteZeroShot": ClipSuiteZeroShot,
    "ClipSuiteA1111Parameters": ClipSuiteA1111Parameters,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "ClipSuiteLoader": "Load CLIP (CLIP Suite)",
    "ClipSuiteLoraLoader": "Apply LoRA to CLIP (CLIP Suite)",
    "ClipSuiteTextEncode": "CLIP Text Encode (CLIP skip, long prompts)",
    "ClipSuiteTextEncodeSDXL": "SDXL Text Encode (CLIP skip, long prompts)",
    "ClipSuitePromptTokens": "Prompt Tokens (CLIP Suite)",
    "ClipSuiteImageTextSimilarity": "Image-Text Similarity (CLIP score)",
    "ClipSuiteSelectBest": "Keep Best Images (CLIP score)",
    "ClipSuiteAestheticScore": "Aesthetic Score (CLIP)",
    "ClipSuiteZeroShot": "Classify Images (CLIP zero-shot)",
    "ClipSuiteA1111Parameters": "A1111 Parameters (CLIP Suite)",
}

# Inside ComfyUI, importing the pack registers the web extension's tokenizer route and the models/aesthetic
# folder with ComfyUI (a no-op anywhere else: tests, scripts and the CLI import the nodes without side effects).
from . import host  # noqa: E402

host.register_with_comfyui()
