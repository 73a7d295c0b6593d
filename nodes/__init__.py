"""ComfyUI node classes (thin adapters over ``clip_impl``); ``host.py`` is the only ComfyUI-facing module."""

from .loader import ClipSuiteLoader
from .lora import ClipSuiteLoraLoader
from .prompt_tokens import ClipSuitePromptTokens
from .text_encode import ClipSuiteTextEncode, ClipSuiteTextEncodeSDXL

NODE_CLASS_MAPPINGS = {
    "ClipSuiteLoader": ClipSuiteLoader,
    "ClipSuiteLoraLoader": ClipSuiteLoraLoader,
    "ClipSuiteTextEncode": ClipSuiteTextEncode,
    "ClipSuiteTextEncodeSDXL": ClipSuiteTextEncodeSDXL,
    "ClipSuitePromptTokens": ClipSuitePromptTokens,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "ClipSuiteLoader": "Load CLIP (CLIP Suite)",
    "ClipSuiteLoraLoader": "Apply LoRA to CLIP (CLIP Suite)",
    "ClipSuiteTextEncode": "CLIP Text Encode (CLIP skip, long prompts)",
    "ClipSuiteTextEncodeSDXL": "SDXL Text Encode (CLIP skip, long prompts)",
    "ClipSuitePromptTokens": "Prompt Tokens (CLIP Suite)",
}
