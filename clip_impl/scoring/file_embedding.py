"""Image files to CLIP image embeddings, a batch at a time, with one error per unreadable file.

What the folder commands (``classify``, ``search``, ``duplicates``) share: each file is loaded by the one
image loader of the pack (``image_loader.ImageLoader``: pillow decoding with EXIF orientation, alpha dropped,
bounded memory, then CLIP's preprocessing; in worker processes ahead of the model for 16 images or more)
and each batch runs through the vision tower once. A file that cannot be read becomes that file's error and
the others go on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator

import torch

from ..images.loader import ImageLoader, LoadedImage, default_workers
from ..model import ClipModel
from ..images.preprocess import load_image_file, preprocess_images
from .similarity import pixel_embeddings, scoring_towers


@dataclass
class FileEmbedding:
    """One file's outcome: its L2-normalised embedding (P,) float32 on the CPU, or why it has none.

    The embeddings of one batch are rows of one (B, P) tensor of their own (nothing else: not the model's
    output, not the pixels), made after the forward pass: one small tensor per image, allocated while the
    batch's big buffers were alive, pinned the heap between them (+330 MB over 10,000 images kept).
    """

    path: str
    embedding: torch.Tensor | None = None
    error: str = ""


def read_pixels(path: str, size: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """One image file as CLIP pixels (1, 3, size, size); ValueError naming the file when it cannot be read."""
    return preprocess_images(load_image_file(path), size, device, dtype)


def embed_image_files(
    model: ClipModel, paths: list[str], batch_size: int = 8, workers: int | None = None
) -> Iterator[list[FileEmbedding]]:
    """Yield, batch by batch and in order, one :class:`FileEmbedding` per path of ``paths``.

    ``batch_size`` images go through the vision tower at once; ``workers`` loader processes decode ahead
    (None: ``image_loader.default_workers`` for this many images; 0: in this process). Raises ValueError
    only for a model that cannot embed images; unreadable files are reported in their ``error``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}; use 1 or more")
    _, vision = scoring_towers(model)
    if not paths:
        return
    workers = default_workers(len(paths)) if workers is None else workers
    batch: list[LoadedImage] = []
    with ImageLoader(workers) as loader:
        for item in loader.load(list(paths), vision.config.image_size):
            batch.append(item)
            if len(batch) == batch_size:
                yield _embed(vision, batch)
                batch = []
        if batch:
            yield _embed(vision, batch)


def _embed(vision, batch: list[LoadedImage]) -> list[FileEmbedding]:
    rows = [FileEmbedding(os.fspath(item.path), error=item.error) for item in batch]
    pixels = [item.pixels for item in batch if item.pixels is not None]
    if not pixels:
        return rows
    stacked = torch.stack(pixels).to(device=vision.device, dtype=vision.compute_dtype)
    out = pixel_embeddings(vision, stacked)
    del stacked, pixels  # the big buffers go before the block that stays is made
    embeds = iter(out.to("cpu", torch.float32, copy=True))
    del out
    for row, item in zip(rows, batch):
        if item.pixels is not None:
            row.embedding = next(embeds)
    return rows
