"""HPS v2's image preprocessing: the long side to the model's size, black bars to a square (no crop).

HPSv2's ``preprocess_val`` (its open_clip fork, ``image_transform(..., resize_longest_max=True)`` as
``create_model_and_transforms(light_augmentation=True)`` builds it) converts the image to a 0..1 tensor,
resizes it so that the **long** side is ``size`` (bicubic, antialiased, ``round(side * scale)``), pads it
to ``size x size`` with zeros (``pad_w // 2`` left, ``pad_h // 2`` top, the rest right and bottom), and
normalises with CLIP's mean and std. Unlike ``preprocess.preprocess_images`` (CLIP's centre crop) nothing is
cut off, and the resized values are not rounded to 8 bits. For a square image both give the same resize.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F

from .preprocess import CLIP_MEAN, CLIP_STD, check_image_batch

Fit = Literal["crop", "pad"]  # crop: CLIP / PickScore / CLIPScore / aesthetic heads; pad: HPS v2
FITS: tuple[Fit, ...] = get_args(Fit)


def letterbox_images(images: torch.Tensor, size: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """ComfyUI IMAGE [B, H, W, C] (0..1) -> normalised pixels [B, 3, size, size], HPS v2's way (see above)."""
    images = check_image_batch(images).permute(0, 3, 1, 2)  # (B, 3, H, W)
    h, w = images.shape[2:]
    scale = size / max(h, w)
    if scale != 1.0:
        new = (round(h * scale), round(w * scale))
        images = F.interpolate(images, size=new, mode="bicubic", antialias=True, align_corners=False)
    pad_h, pad_w = size - images.shape[2], size - images.shape[3]
    images = F.pad(images, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2), value=0.0)
    mean = torch.tensor(CLIP_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=images.device).view(1, 3, 1, 1)
    return ((images - mean) / std).to(device=device or images.device, dtype=dtype)
