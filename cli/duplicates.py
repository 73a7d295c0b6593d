"""``python -m clip_suite duplicates``: groups of near-identical images (CLIP image embeddings).

    python -m clip_suite duplicates --model FILE [--model-2 FILE] [--threshold 0.95] [--index FILE]
        [--out CSV] DIR...

Two images are near-duplicates when the cosine of their image embeddings is at least ``--threshold``;
a group is every image linked to another by such pairs (single linkage), so A~B and B~C make one group.
Groups are listed largest first (then in the order the images were found); within a group the paths are sorted and
``cosine`` is each image's similarity to the group's first image. Output: ``group N: K images`` headers
with ``  cosine  path`` lines, or a CSV (group, size, path, cosine). Embeddings come from the same index
as ``search``.
"""

from __future__ import annotations

import argparse
import sys

import torch

from .csv_out import csv_output
from .embed_images import (
    add_index_options, add_model_options, check_index, check_out, embed_folders, load_model, report_failed,
)

CSV_COLUMNS = ("group", "size", "path", "cosine")
DEFAULT_THRESHOLD = 0.95
_BLOCK = 1024  # rows of the similarity matrix computed at once (bounds memory for big folders)


def threshold(value: str) -> float:
    """argparse type: a cosine in (-1, 1]."""
    x = float(value)
    if not -1.0 < x <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a cosine in (-1, 1], got {value}")
    return x


def add_arguments(p: argparse.ArgumentParser) -> None:
    """find groups of near-duplicate images (image embeddings with cosine >= threshold)"""
    add_model_options(p)
    p.add_argument("--threshold", type=threshold, default=DEFAULT_THRESHOLD, metavar="COS",
                   help=f"cosine at which two images count as near-duplicates (default {DEFAULT_THRESHOLD})")
    add_index_options(p)
    p.add_argument("--out", help="write a CSV (group, size, path, cosine) instead of printing ('-' for stdout)")
    p.add_argument("images", nargs="+", metavar="DIR", help="folders (searched recursively) and image files")


def duplicate_groups(embeddings: torch.Tensor, min_cosine: float) -> list[list[int]]:
    """Groups (lists of row indexes, sorted) of rows of ``embeddings`` (N, P), L2-normalised, linked by
    pairs with cosine >= ``min_cosine``; only groups of 2 or more, largest first, then by first index."""
    n = embeddings.shape[0]
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for start in range(0, n, _BLOCK):
        block = embeddings[start : start + _BLOCK] @ embeddings.T  # (b, N)
        rows, cols = torch.nonzero(block >= min_cosine, as_tuple=True)
        for r, c in zip((rows + start).tolist(), cols.tolist()):
            if c > r:
                a, b = root(r), root(c)
                if a != b:
                    parent[max(a, b)] = min(a, b)
    members: dict[int, list[int]] = {}
    for i in range(n):
        members.setdefault(root(i), []).append(i)
    groups = [g for g in members.values() if len(g) > 1]
    return sorted(groups, key=lambda g: (-len(g), g[0]))


def run(args) -> int:
    check_out(args.out)
    check_index(args)
    model, _name = load_model(args)
    found = embed_folders(args, model, args.images)
    rows = []
    for number, group in enumerate(_by_path(found, duplicate_groups(found.embeddings, args.threshold)), 1):
        first = found.embeddings[group[0]]
        for i in group:
            rows.append((number, len(group), found.paths[i], float(found.embeddings[i] @ first)))
    if args.out:
        _write_csv(args.out, rows)
    else:
        _print_groups(rows)
    report_failed(found.failed)
    groups = len({r[0] for r in rows})
    print(
        f"{groups} group{'s' if groups != 1 else ''} of near-duplicates ({len(rows)} images) among "
        f"{len(found.paths)} images at cosine >= {args.threshold:g}", file=sys.stderr,
    )
    print(found.summary, file=sys.stderr)
    return 0


def _by_path(found, groups: list[list[int]]) -> list[list[int]]:
    """Each group's members sorted by path (the order people read them in)."""
    return [sorted(g, key=lambda i: found.paths[i]) for g in groups]


def _print_groups(rows) -> None:
    current = None
    for number, size, path, cos in rows:
        if number != current:
            print(f"group {number}: {size} images")
            current = number
        print(f"  {cos:.4f}  {path}")


def _write_csv(out: str, rows) -> None:
    with csv_output(out) as csv_out:
        csv_out.writer.writerow(CSV_COLUMNS)
        csv_out.writer.writerows((g, size, csv_out.path(path), f"{cos:.6f}") for g, size, path, cos in rows)
