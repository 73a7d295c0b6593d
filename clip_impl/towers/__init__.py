"""The CLIP towers in plain torch: one pre-LN transformer :class:`Block` for text and vision, the text tower
with its presets (CLIP-L, OpenCLIP ViT-H and ViT-bigG), the vision tower with its presets, and the pending
fp32 copies that let a freshly loaded tower start from the file's mapped tensors.

Parameter names follow the checkpoints (``self_attn``, ``layer_norm1``, ``final_layer_norm``), so state dicts
load without remapping once :mod:`..weights` has put them in one layout.
"""

from .pending_copies import PendingCopies
from .text import CLIP_L, OPENCLIP_BIGG, OPENCLIP_H, TextTower, TextTowerConfig, TowerOutput, first_eos
from .transformer import Block, Borrowed, Encoder, FileLinear
from .vision import VISION_PRESETS, VIT_BIGG_14, VIT_H_14, VIT_L_14, VIT_L_14_336, VisionTower, VisionTowerConfig

__all__ = [
    "CLIP_L", "OPENCLIP_BIGG", "OPENCLIP_H", "TextTower", "TextTowerConfig", "TowerOutput", "first_eos",
    "VISION_PRESETS", "VIT_BIGG_14", "VIT_H_14", "VIT_L_14", "VIT_L_14_336", "VisionTower", "VisionTowerConfig",
    "Block", "Borrowed", "Encoder", "FileLinear", "PendingCopies",
]
