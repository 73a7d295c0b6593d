"""Images to CLIP pixels, in torch (no torchvision): ComfyUI IMAGE batches and image files.

The recipe (DESIGN 7, and what ComfyUI's ``comfy.clip_vision.clip_preprocess`` does): the short side is
resized to the model's size (224 or 336), bicubic with antialias, the long side to ``round(scale * side)``;
the centre square is cropped; values are clipped to 0..1 and rounded to 8 bits (CLIP's reference pipeline
works on 8-bit images, and ComfyUI rounds the same way); then normalised with CLIP's mean and std.

Input rules for an IMAGE batch (float [B, H, W, C], values 0..1):
- 3 channels: RGB. 4 channels: RGBA, the alpha channel is dropped (as ComfyUI's clip_preprocess and
  pillow's ``convert("RGB")`` do; transparency is not composited). 1 channel: grey, repeated to RGB.
  Other channel counts, other ranks, empty images and non-float tensors are errors.
- NaN or infinite values are errors (a NaN would silently become a NaN score). Values slightly outside
  0..1 (resampling overshoot) are clipped; values beyond -0.25..1.25 are an error, since they mean a
  tensor in another range (-1..1 latents decoded without clamping, or 0..255).
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
_TOLERANCE = 0.25  # how far outside 0..1 an IMAGE may stray before it is refused
_RESIZE_BATCH = 8  # images resized at once: bounds the memory of the full-size float copies


def check_image_batch(images: torch.Tensor, what: str = "images") -> torch.Tensor:
    """Validate a ComfyUI IMAGE batch and return it as float32 RGB [B, H, W, 3] (same device)."""
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"{what}: expected a torch tensor [B, H, W, C], got {type(images).__name__}")
    if images.ndim != 4:
        raise ValueError(
            f"{what}: expected an IMAGE batch of shape [B, H, W, C], got shape {tuple(images.shape)} "
            f"({images.ndim} dimensions)"
            + ("; a single image needs a leading batch dimension of 1" if images.ndim == 3 else "")
        )
    b, h, w, c = images.shape
    if b == 0 or h == 0 or w == 0:
        raise ValueError(f"{what}: the batch is empty (shape {tuple(images.shape)}); nothing to score")
    if not images.is_floating_point():
        raise ValueError(f"{what}: expected float values 0..1 (a ComfyUI IMAGE), got dtype {images.dtype}")
    if c == 4:
        images = images[..., :3]
    elif c == 1:
        images = images.expand(b, h, w, 3)
    elif c != 3:
        raise ValueError(
            f"{what}: {c} channels; expected 3 (RGB), 4 (RGBA: alpha is dropped) or 1 (grey) in the last "
            f"dimension of [B, H, W, C] (shape {tuple(images.shape)})"
        )
    images = images.float()
    finite = torch.isfinite(images).flatten(1).all(dim=1)
    if not bool(finite.all()):
        bad = [i for i, ok in enumerate(finite.tolist()) if not ok]
        raise ValueError(f"{what}: image{'s' if len(bad) > 1 else ''} {_list(bad)} {'hold' if len(bad) > 1 else 'holds'} NaN or infinite values")
    low, high = float(images.min()), float(images.max())
    if low < -_TOLERANCE or high > 1 + _TOLERANCE:
        raise ValueError(
            f"{what}: values range {low:.3g}..{high:.3g}; a ComfyUI IMAGE holds 0..1 "
            "(scale 0..255 images by 1/255, -1..1 tensors by (x + 1) / 2)"
        )
    return images


def _list(indexes: list[int], most: int = 8) -> str:
    shown = ", ".join(str(i) for i in indexes[:most])
    return shown + (f" and {len(indexes) - most} more" if len(indexes) > most else "")


def resize_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """[B, 3, H, W] -> [B, 3, size, size]: short side to ``size`` (bicubic, antialias), centre crop."""
    h, w = images.shape[2:]
    if (h, w) == (size, size):
        return images
    scale = size / min(h, w)
    new = (round(scale * h), round(scale * w))  # Python's round, as ComfyUI's clip_preprocess
    images = F.interpolate(images, size=new, mode="bicubic", antialias=True, align_corners=False)
    top, left = (new[0] - size) // 2, (new[1] - size) // 2
    return images[:, :, top : top + size, left : left + size]


def preprocess_images(images: torch.Tensor, size: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """ComfyUI IMAGE [B, H, W, C] (0..1) -> normalised CLIP pixels [B, 3, size, size].

    ``device``/``dtype``: where the result goes (the vision tower's device and compute dtype); the resize
    runs in float32 on the input's device.
    """
    images = check_image_batch(images)
    mean = torch.tensor(CLIP_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=images.device).view(1, 3, 1, 1)
    out = []
    for start in range(0, images.shape[0], _RESIZE_BATCH):
        x = resize_crop(images[start : start + _RESIZE_BATCH].permute(0, 3, 1, 2), size)
        x = (x * 255.0).clamp(0, 255).round() / 255.0
        out.append(((x - mean) / std).to(device=device or images.device, dtype=dtype))
    return torch.cat(out)


def open_image(path: str | os.PathLike):
    """Open and decode an image file with pillow (decoded now, so later reads cannot fail half-way).

    Raises ValueError naming the file when it is missing, not an image, truncated or too large.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(path)
        img.load()
        return img
    except FileNotFoundError as e:
        raise ValueError(f"{path}: file not found") from e
    except UnidentifiedImageError as e:
        raise ValueError(f"{path}: not an image pillow can read (corrupt, or not PNG/JPEG/WebP)") from e
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
        raise ValueError(f"{path}: cannot read the image ({e})") from e


def image_to_tensor(img) -> torch.Tensor:
    """A decoded pillow image as a float IMAGE [1, H, W, 3] in 0..1.

    The EXIF orientation is applied (as ComfyUI's LoadImage does); the first frame of an animation is
    used; alpha is dropped; 16-bit greyscale PNGs keep their precision.
    """
    import numpy as np
    from PIL import ImageOps

    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit greyscale PNG
        arr = np.clip(np.asarray(img, dtype=np.float32) / 65535.0, 0.0, 1.0)[..., None]
    else:
        arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    if arr.size == 0:
        raise ValueError(f"{getattr(img, 'filename', '') or 'image'}: the image is empty (0 pixels)")
    tensor = torch.from_numpy(np.ascontiguousarray(arr))[None]
    return tensor.expand(-1, -1, -1, 3) if tensor.shape[-1] == 1 else tensor


def load_image_file(path: str | os.PathLike) -> torch.Tensor:
    """An image file (PNG, JPEG, WebP, ... as pillow reads it) as a float IMAGE [1, H, W, 3] in 0..1."""
    img = open_image(path)
    try:
        return image_to_tensor(img)
    finally:
        img.close()
