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


MAX_ASPECT = 64  # long side / short side beyond which an image is refused (a 1 x 400,000 strip is no photo)
_WIDE = 4  # above this aspect ratio only the columns (rows) of the centre square are resized


def resize_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """[B, 3, H, W] -> [B, 3, size, size]: short side to ``size`` (bicubic, antialias), centre crop.

    Images up to 4:1 are resized whole and cropped, exactly as ComfyUI does. Wider (taller) ones have their
    long side resized only where the centre square needs it (same filter, weights from the same formula),
    so memory stays ~ size x size whatever the length; ratios over ``MAX_ASPECT`` are refused.
    """
    h, w = images.shape[2:]
    if (h, w) == (size, size):
        return images
    short, long = min(h, w), max(h, w)
    if long > MAX_ASPECT * short:
        raise ValueError(
            f"the image is {w} x {h} pixels, an aspect ratio of {long / short:,.0f}:1; images over "
            f"{MAX_ASPECT}:1 are refused (the centre square would be a sliver of it)"
        )
    scale = size / short
    new = (round(scale * h), round(scale * w))  # Python's round, as ComfyUI's clip_preprocess
    top, left = (new[0] - size) // 2, (new[1] - size) // 2
    if long > _WIDE * short:
        if w >= h:  # the long side's window first (-> [B, 3, H, size]), then the short side (crop offset 0)
            images = _resize_axis_window(images, 3, new[1], left, size)
            images = F.interpolate(images, size=(new[0], size), mode="bicubic", antialias=True, align_corners=False)
            return images[:, :, top : top + size, :]
        images = _resize_axis_window(images, 2, new[0], top, size)
        images = F.interpolate(images, size=(size, new[1]), mode="bicubic", antialias=True, align_corners=False)
        return images[:, :, :, left : left + size]
    images = F.interpolate(images, size=new, mode="bicubic", antialias=True, align_corners=False)
    return images[:, :, top : top + size, left : left + size]


def _aa_cubic(x: torch.Tensor) -> torch.Tensor:
    """The antialiasing bicubic kernel (a = -0.5) of pillow and torch's ``antialias=True``."""
    a = -0.5
    x = x.abs()
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return torch.where(x < 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


def _resize_axis_window(images: torch.Tensor, axis: int, out_len: int, offset: int, count: int) -> torch.Tensor:
    """Output positions ``offset .. offset + count`` of resizing ``axis`` to ``out_len`` (antialiased
    bicubic, torch's weights: centre (i + 0.5) * in / out, support 2 x max(1, in / out), normalised)."""
    in_len = images.shape[axis]
    ratio = in_len / out_len
    support = 2.0 * max(ratio, 1.0)
    inv = 1.0 / max(ratio, 1.0)
    centre = ratio * (torch.arange(offset, offset + count, dtype=torch.float64) + 0.5)
    xmin = (centre - support + 0.5).clamp(min=0).to(torch.int64)  # int() truncation; >= 0 here
    xmax = (centre + support + 0.5).to(torch.int64).clamp(max=in_len)
    taps = int((xmax - xmin).max())
    idx = xmin[:, None] + torch.arange(taps)[None, :]  # [count, taps]
    weights = _aa_cubic((idx.to(torch.float64) - centre[:, None] + 0.5) * inv)
    weights = torch.where(idx < xmax[:, None], weights, torch.zeros_like(weights))
    weights = (weights / weights.sum(dim=1, keepdim=True)).to(images.dtype)
    idx = idx.clamp(max=in_len - 1)
    moved = images.movedim(axis, -1)  # [..., in_len]
    picked = moved[..., idx.reshape(-1)].reshape(*moved.shape[:-1], count, taps)
    return (picked * weights).sum(dim=-1).movedim(-1, axis)


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


MAX_DECODE_PIXELS = 64 * 2**20  # pixels decoded at most (~200 MB as 8-bit RGB); JPEGs over it decode reduced
WORK_PIXELS = 16 * 2**20  # decoded images over this are reduced (box filter, integer factor) before scoring


def open_image(path: str | os.PathLike, notes: list | None = None):
    """Open and decode an image file with pillow (decoded now, so later reads cannot fail half-way).

    Only regular files are opened (a FIFO or device never blocks the caller). Memory is bounded: an image
    over ``MAX_DECODE_PIXELS`` decodes at a reduced scale where the format allows it (JPEG ``draft``) and
    is refused otherwise; a decoded image over ``WORK_PIXELS`` is reduced by an integer factor. Each such
    step (and pillow's DecompressionBombWarning) is appended to ``notes`` when a list is given.
    Raises ValueError naming the file when it is missing, not a regular file, not an image, truncated or
    too large.
    """
    import stat
    import warnings

    from PIL import Image, UnidentifiedImageError

    notes = notes if notes is not None else []
    try:
        # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer, forever.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError as e:
        raise ValueError(f"{path}: file not found") from e
    except OSError as e:
        raise ValueError(f"{path}: cannot open the file ({e.strerror or e})") from e
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a device or socket"
            raise ValueError(f"{path}: not a regular file ({kind}); only image files are read")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        handle = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", Image.DecompressionBombWarning)
            img = Image.open(handle)
            img = _decode_bounded(img, path, notes)
        for w in caught:
            if issubclass(w.category, Image.DecompressionBombWarning):
                notes.append(f"pillow: {w.message}")
        img.filename = os.fspath(path)  # as Image.open(path) sets it (opened from a file object, it is unset)
        return img
    except ValueError as e:
        handle.close()
        if str(e).startswith(f"{path}: "):
            raise
        raise ValueError(f"{path}: cannot read the image ({e})") from e
    except UnidentifiedImageError as e:
        handle.close()
        raise ValueError(f"{path}: not an image pillow can read (corrupt, or not PNG/JPEG/WebP)") from e
    except (OSError, SyntaxError, EOFError, Image.DecompressionBombError, MemoryError) as e:
        handle.close()
        raise ValueError(f"{path}: cannot read the image ({e})") from e


def _decode_bounded(img, path, notes: list):
    """Decode ``img`` within MAX_DECODE_PIXELS / WORK_PIXELS (see :func:`open_image`)."""
    import math

    w, h = img.size
    if w * h > MAX_DECODE_PIXELS and img.format == "JPEG":
        factor = math.ceil(math.sqrt(w * h / MAX_DECODE_PIXELS))
        img.draft(img.mode if img.mode in ("RGB", "L") else "RGB", (max(1, w // factor), max(1, h // factor)))
        notes.append(f"the {w} x {h} JPEG was decoded at {img.size[0]} x {img.size[1]} (over {MAX_DECODE_PIXELS:,} pixels)")
    dw, dh = img.size
    if dw * dh > MAX_DECODE_PIXELS:
        raise ValueError(
            f"{path}: the image is {w} x {h} = {w * h:,} pixels; CLIP Suite decodes at most {MAX_DECODE_PIXELS:,} "
            "(CLIP sees 224-336 pixels a side: save a smaller copy)"
        )
    img.load()
    if dw * dh > WORK_PIXELS:
        factor = math.ceil(math.sqrt(dw * dh / WORK_PIXELS))
        source = img
        if img.mode in ("1", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
            img = img.convert("RGBA" if "A" in img.mode or "transparency" in img.info else "RGB")
        img = img.reduce(factor)
        img.info = dict(source.info)
        img.info.update(getattr(source, "text", None) or {})  # PNG text chunks: the prompt metadata
        img.format = source.format
        source.close()
        notes.append(f"the {dw} x {dh} image was reduced to {img.size[0]} x {img.size[1]} before scoring (over {WORK_PIXELS:,} pixels)")
    return img


def image_to_tensor(img, notes: list | None = None) -> torch.Tensor:
    """A decoded pillow image as a float IMAGE [1, H, W, 3] in 0..1.

    The EXIF orientation is applied (as ComfyUI's LoadImage does); the first frame of an animation is
    used; alpha is dropped; 16-bit greyscale PNGs keep their precision. 32-bit images (mode ``I`` and
    ``F``, e.g. TIFF data) are scaled by the range they hold (0..1, 0..255 or 0..65535; a note says so in
    ``notes``); NaN or infinite values, and other ranges, are refused with ValueError.
    """
    import numpy as np
    from PIL import ImageOps

    name = getattr(img, "filename", "") or "image"
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L"):  # 16-bit greyscale PNG
        arr = np.clip(np.asarray(img, dtype=np.float32) / 65535.0, 0.0, 1.0)[..., None]
    elif img.mode in ("I", "F"):
        arr = _scale_wide(np.asarray(img, dtype=np.float64), img.mode, name, notes)[..., None]
    else:
        arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    if arr.size == 0:
        raise ValueError(f"{name}: the image is empty (0 pixels)")
    tensor = torch.from_numpy(np.ascontiguousarray(arr))[None]
    return tensor.expand(-1, -1, -1, 3) if tensor.shape[-1] == 1 else tensor


def _scale_wide(arr, mode: str, name: str, notes: list | None):
    """32-bit integer or float pixels -> float32 0..1, scaled by the range they hold (see image_to_tensor)."""
    import numpy as np

    kind = "32-bit float" if mode == "F" else "32-bit integer"
    if arr.size and not np.isfinite(arr).all():
        raise ValueError(f"{name}: a {kind} image with NaN or infinite pixels; it cannot be scored")
    low, high = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    for top in ((1.0,) if mode == "F" else ()) + (255.0, 65535.0):
        if low >= 0 and high <= top:
            if notes is not None:
                notes.append(f"{kind} pixels ({low:g}..{high:g}) read as 0..{top:g}")
            return (arr / top).astype(np.float32)
    raise ValueError(
        f"{name}: a {kind} image with values {low:g}..{high:g}; only 0..1 (float), 0..255 or 0..65535 can be "
        "read as brightness. Save it as an 8- or 16-bit image"
    )


def load_image_file(path: str | os.PathLike, notes: list | None = None) -> torch.Tensor:
    """An image file (PNG, JPEG, WebP, ... as pillow reads it) as a float IMAGE [1, H, W, 3] in 0..1."""
    img = open_image(path, notes)
    try:
        return image_to_tensor(img, notes)
    finally:
        img.close()
