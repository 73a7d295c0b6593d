"""Image files to CLIP image embeddings, a batch at a time, with one error per unreadable file.

What the folder commands (``classify``, ``search``, ``duplicates``) share: each file is opened and decoded
with pillow (``preprocess.open_image``: EXIF orientation applied, alpha dropped), preprocessed like every
CLIP image (``preprocess.preprocess_images``) and the batch runs through the vision tower once. A file
that cannot be read becomes that file's error and the others go on. The next batch is decoded in a
background thread while the vision tower runs the current one (pillow releases the GIL while decoding).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator

import torch

from .model import ClipModel
from .preprocess import image_to_tensor, open_image, preprocess_images
from .similarity import pixel_embeddings, scoring_towers


@dataclass
class FileEmbedding:
    """One file's outcome: its L2-normalised embedding (P,) float32 on the CPU, or why it has none."""

    path: str
    embedding: torch.Tensor | None = None
    error: str = ""


def read_pixels(path: str, size: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """One image file as CLIP pixels (1, 3, size, size); ValueError naming the file when it cannot be read."""
    img = open_image(path)
    try:
        return preprocess_images(image_to_tensor(img), size, device, dtype)
    finally:
        img.close()


def _decode(paths: list[str], size: int, device, dtype) -> list:
    """Per path: its pixels, or the reason (a string) it has none."""
    out = []
    for path in paths:
        try:
            out.append(read_pixels(path, size, device, dtype))
        # pillow raises many exception types on malformed files; each becomes that file's error.
        except Exception as e:  # noqa: BLE001
            reason = str(e) if isinstance(e, ValueError) else f"cannot read the image ({type(e).__name__}: {e})"
            out.append(reason.replace(f"{path}: ", "", 1))
    return out


def embed_image_files(model: ClipModel, paths: list[str], batch_size: int = 8) -> Iterator[list[FileEmbedding]]:
    """Yield, batch by batch and in order, one :class:`FileEmbedding` per path of ``paths``.

    ``batch_size`` images go through the vision tower at once. Raises ValueError only for a model that
    cannot embed images; unreadable files are reported in their ``error``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}; use 1 or more")
    _, vision = scoring_towers(model)
    size, device, dtype = vision.config.image_size, vision.device, vision.compute_dtype
    batches = [list(paths[i : i + batch_size]) for i in range(0, len(paths), batch_size)]
    if not batches:
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="clip-suite-decode") as pool:
        pending = pool.submit(_decode, batches[0], size, device, dtype)
        for i, batch in enumerate(batches):
            decoded = pending.result()
            if i + 1 < len(batches):
                pending = pool.submit(_decode, batches[i + 1], size, device, dtype)
            yield _embed(vision, batch, decoded)


def _embed(vision, batch: list[str], decoded: list) -> list[FileEmbedding]:
    rows = [FileEmbedding(os.fspath(p)) for p in batch]
    pixels = [d for d in decoded if isinstance(d, torch.Tensor)]
    embeds = iter(pixel_embeddings(vision, torch.cat(pixels)).cpu() if pixels else [])
    for row, item in zip(rows, decoded):
        if isinstance(item, torch.Tensor):
            row.embedding = next(embeds).clone()
        else:
            row.error = item
    return rows
