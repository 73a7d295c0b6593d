"""``python -m clip_suite search``: rank every image of folders by cosine to a text or an image query.

    python -m clip_suite search --model FILE [--model-2 FILE] (--text QUERY | --image FILE) [--top K]
        [--index FILE] [--out CSV] IMAGE_OR_DIR...

Prints ``cosine  path`` lines for every image (``--top K``: the K best), best first, or writes a CSV
(rank, cosine, path). Image embeddings are kept in an index (``embed_images``), so a later search embeds
only new or changed images; the run ends with one line on stderr: ``index: N new, M removed, K reused``.
Unreadable images are listed on stderr and skipped; exit code 2 only for bad arguments (an ``--index``
that names something other than an index included: it is never replaced) or a model that cannot embed
images. An index that cannot be read or written is a ``warning:`` line; the ranking is printed and the
exit code stays 0.
"""

from __future__ import annotations

import argparse
import sys

import torch

from ..clip_impl.scoring import pixel_embeddings, prepare_prompt, read_pixels, scoring_towers, text_embedding
from .csv_out import csv_output
from .embed_images import (
    add_index_options, add_model_options, check_index, check_out, embed_folders, load_model, one_thread,
    report_failed,
)

CSV_COLUMNS = ("rank", "cosine", "path")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """find images by a sentence or by another image (cosine ranking, with an index of embeddings)"""
    add_model_options(p)
    query = p.add_mutually_exclusive_group(required=True)
    query.add_argument("--text", help="rank images by similarity to this text")
    query.add_argument("--image", metavar="FILE", help="rank images by similarity to this image")
    p.add_argument("--top", type=int, default=0, metavar="K",
                   help="list only the K best images (default: every image, best first)")
    add_index_options(p)
    p.add_argument("--out", help="write a CSV (rank, cosine, path) instead of printing ('-' for stdout)")
    p.add_argument("images", nargs="+", metavar="IMAGE_OR_DIR", help="image files and folders (searched recursively)")


def query_embedding(model, args) -> torch.Tensor:
    """The query's L2-normalised embedding (P,): the text's (weighting syntax removed, as ``score`` does)
    or the image's. ValueError naming the query when it cannot be used."""
    if args.text is not None:
        with one_thread():  # a few tokens: the thread pool's wake-ups cost more than they give
            return text_embedding(model, prepare_prompt(args.text))
    _, vision = scoring_towers(model)
    try:
        pixels = read_pixels(args.image, vision.config.image_size, vision.device, vision.compute_dtype)
    except ValueError as e:
        raise ValueError(f"--image {e}") from e
    return pixel_embeddings(vision, pixels)[0].cpu()


def run(args) -> int:
    if args.top < 0:
        raise ValueError(f"--top {args.top}: give the number of images to list (0 or no --top: every image)")
    if args.text is not None:
        prepare_prompt(args.text)  # refuse an empty query before loading anything
    check_out(args.out)
    check_index(args)
    model, _name = load_model(args)
    query = query_embedding(model, args)
    found = embed_folders(args, model, args.images)
    cosines = (found.embeddings @ query.to(found.embeddings.dtype)).tolist() if found.paths else []
    order = sorted(range(len(cosines)), key=lambda i: (-cosines[i], found.paths[i]))
    if args.top:
        order = order[: args.top]
    if args.out:
        _write_csv(args.out, [(rank + 1, cosines[i], found.paths[i]) for rank, i in enumerate(order)])
    else:
        for i in order:
            print(f"{cosines[i]:.4f}  {found.paths[i]}")
    report_failed(found.failed)
    print(found.summary, file=sys.stderr)
    return 0


def _write_csv(out: str, rows) -> None:
    with csv_output(out) as csv_out:
        csv_out.writer.writerow(CSV_COLUMNS)
        csv_out.writer.writerows((rank, f"{cos:.6f}", csv_out.path(path)) for rank, cos, path in rows)
