"""Model files: reading only the keys that are needed (safetensors, or pickles with ``weights_only``), the
key layouts of text and vision towers (HF, OpenCLIP, SD checkpoints, diffusers folders), building towers
from them, :func:`load_clip`, and text-encoder LoRA (reading a file's keys, then patching towers).
"""

from .assembly import PRECISIONS, Precision
from .files import ModelFileError, WeightReader
from .loading import ARCHITECTURES, Architecture, build_text_tower, load_clip
from .lora_keys import TextEncoderLora, read_lora
from .lora_patch import LoraResult, apply_loras, reshare, tower_for
from .text_layouts import TowerSource, find_text_towers, to_tower_state_dict
from .vision import to_vision_state_dict, vision_in_dtype

__all__ = [
    "ARCHITECTURES", "Architecture", "PRECISIONS", "Precision", "load_clip", "build_text_tower", "ModelFileError",
    "WeightReader",
    "TextEncoderLora", "read_lora", "LoraResult", "apply_loras", "reshare", "tower_for",
    "TowerSource", "find_text_towers", "to_tower_state_dict", "to_vision_state_dict", "vision_in_dtype",
]
