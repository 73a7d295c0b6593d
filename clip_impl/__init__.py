"""CLIP Suite's library: CLIP text encoding with clip skip, long prompts and A1111 syntax, and CLIP scoring,
in plain torch with no ComfyUI import (the nodes and the command line are thin layers over it).

A small flat core (:class:`ClipModel`, :mod:`.clip_skip`, the chunk cache, the tokenizer and its vocabulary,
folder walking) sits under feature sub-packages that import only downward::

    towers  <  weights  <  text  <  a1111, images  <  scoring

Typical use::

    from clip_suite.clip_impl import EncodeSettings, encode_prompt, load_clip
    model = load_clip("sd_xl_base_1.0.safetensors")
    encoded = encode_prompt(model, "a photo of a cat BREAK studio light", EncodeSettings(clip_skip=0))
    encoded.cond.shape  # (1, 154, 2048): two chunks, CLIP-L and CLIP-G channels
"""

from .clip_skip import FAMILIES, layer_table
from .model import ClipModel
from .scoring import (
    AestheticHead, SimilarityResult, aesthetic_scores, classify_images, load_head, score_images,
)
from .text import EncodedText, EncodeSettings, PromptChunks, encode_prompt, prompt_chunks
from .weights import ModelFileError, apply_loras, load_clip, read_lora
from .a1111 import ScheduledEncoding, ScheduledEntry, encode_scheduled, parse_infotext, translate

__all__ = [
    "load_clip", "ClipModel", "ModelFileError", "read_lora", "apply_loras",
    "EncodeSettings", "EncodedText", "encode_prompt", "PromptChunks", "prompt_chunks",
    "FAMILIES", "layer_table", "parse_infotext", "translate",
    "encode_scheduled", "ScheduledEncoding", "ScheduledEntry",
    "score_images", "SimilarityResult", "classify_images", "AestheticHead", "load_head", "aesthetic_scores",
]
