"""``python -m clip_suite duplicates``: groups of near-identical images (CLIP image embeddings).

    python -m clip_suite duplicates --model FILE [--model-2 FILE] [--threshold 0.95] [--index FILE]
        [--out CSV] DIR...

Two images are near-duplicates when the cosine of their image embeddings is at least ``--threshold``;
a group is every image linked to another by such pairs (single linkage), so A~B and B~C make one group.
Groups are listed largest first (then in the order the images were found); within a group the paths are sorted and
``cosine`` is each image's similarity to the group's first image. Output: ``group N: K images`` headers
with ``  cosine  path`` lines, or a CSV (group, size, path, cosine). Embeddings come from the same index
as ``search``.

The output is one line per image in a group, never one per pair: 10,000 identical images are 50 million
pairs but one group of 10,000 lines. Finding the groups takes memory for one block of similarities
(_BLOCK_ENTRIES, 4 MB) plus a few numbers per image, and time linear in the pairs compared (in torch).
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
_BLOCK_ENTRIES = 1 << 20  # similarities computed at once (rows x images): bounds memory for big folders


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
    pairs with cosine >= ``min_cosine``; only groups of 2 or more, largest first, then by first index.

    Linear memory and no Python work per pair: the similarities are computed a block of rows at a time
    (at most _BLOCK_ENTRIES of them), thresholded in torch, and merged into a union-find forest kept as one
    tensor (``parent[i] <= i``, so a group's root is its smallest index). A block whose rows are already
    one group is compared only with the other groups' rows. 10,000 identical images link 50 million
    pairs; they cost one block's worth of memory and time and end as one group.
    """
    emb = embeddings.detach().float().cpu()
    n = emb.shape[0]
    if n < 2:
        return []
    parent = torch.arange(n)
    rows = max(1, min(n, _BLOCK_ENTRIES // n))
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        parent = _compress(parent)
        row_roots = parent[start:stop]
        cols = None  # every column from the block's first row on
        if bool((row_roots == row_roots[0]).all()):
            # The block's rows are one group already, and links inside a group change nothing: only the
            # columns of other groups are compared (so 20,000 identical images compare one block, not all).
            others = torch.nonzero(parent[stop:] != row_roots[0]).flatten() + stop
            if others.numel() == 0:
                continue
            if others.numel() < (n - start) // 2:  # else the plain slice is cheaper than gathering rows
                cols = others
        if cols is None:
            # Each pair once, from its smaller index: row r against the columns from r + 1 on.
            linked = (emb[start:stop] @ emb[start:].T) >= min_cosine  # (b, n - start)
            linked[:, : stop - start].triu_(1)
            col_roots = parent[start:]
        else:  # all after the block's rows: each pair once as well
            linked = (emb[start:stop] @ emb[cols].T) >= min_cosine
            col_roots = parent[cols]
        if not bool(linked.any()):
            continue
        # A row joins every group it links to: hook them all onto the smallest of their roots. Links whose
        # group already has that root change nothing and are dropped before any index list is made, so
        # a block of identical rows costs one pass, not a list of its pairs.
        lowest = torch.minimum(torch.where(linked, col_roots, n).amin(dim=1), row_roots)
        pending = linked & (col_roots != lowest[:, None])
        r, c = pending.nonzero(as_tuple=True)
        parent = _union(parent, torch.cat([lowest[r], lowest]), torch.cat([col_roots[c], row_roots]))
    roots = _compress(parent)
    sizes = torch.bincount(roots, minlength=n)
    members = torch.nonzero(sizes[roots] > 1).flatten()  # ascending, so each group's members stay sorted
    if members.numel() == 0:
        return []
    order = torch.sort(roots[members], stable=True).indices
    members = members[order]
    heads = torch.unique_consecutive(roots[members])
    counts = sizes[heads].tolist()
    groups = [g.tolist() for g in torch.split(members, counts)]
    return sorted(groups, key=lambda g: (-len(g), g[0]))


def _compress(parent: torch.Tensor) -> torch.Tensor:
    """Every entry pointed straight at its root (pointer jumping: a few passes, each one gather)."""
    while True:
        jumped = parent[parent]
        if torch.equal(jumped, parent):
            return parent
        parent = jumped


def _union(parent: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``parent`` with the groups of each pair (a[i], b[i]) merged: each round hooks every root that a link
    reaches from a smaller root onto the smallest such root (so ``parent[i] <= i`` holds and there is no
    cycle); every round removes at least one root, and links inside one group are dropped."""
    while a.numel():
        parent = _compress(parent)
        ra, rb = parent[a], parent[b]
        keep = ra != rb
        if not bool(keep.any()):
            break
        low, high = torch.minimum(ra[keep], rb[keep]), torch.maximum(ra[keep], rb[keep])
        parent = parent.scatter_reduce(0, high, low, reduce="amin")
        a, b = low, high
    return parent


def run(args) -> int:
    check_out(args.out)
    check_index(args)
    model, _name = load_model(args)
    found = embed_folders(args, model, args.images)
    rows = []
    for number, group in enumerate(_by_path(found, duplicate_groups(found.embeddings, args.threshold)), 1):
        members = found.embeddings[group]
        cosines = (members @ members[0]).tolist()  # to the group's first image
        rows += [(number, len(group), found.paths[i], cos) for i, cos in zip(group, cosines)]
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
