"""``python -m clip_suite classify``: zero-shot labels for many images, one CSV row per image.

    python -m clip_suite classify --model FILE [--model-2 FILE] (--labels "a,b,c" | --labels-file F)
        [--template T] [--top K] --out labels.csv IMAGE_OR_DIR...

Each image gets the most probable of the labels (``clip_impl.scoring.zero_shot``: softmax over the labels of the
model's ``exp(logit_scale)`` x cosine, 100 x cosine for a text encoder + clip_vision pair; several
templates separated by ``|`` are ensembled). CSV columns: path (as given or found), label, probability
(6 decimals), top_k (``label:prob;label:prob...``, best first), error (empty on success). An unreadable
image gets a row with the reason and the run goes on; bad arguments end it with exit code 2. A progress
bar goes to stderr on a terminal; a summary line (images per label, most frequent first: the first
SUMMARY_LABELS, then a count of the rest; long labels shortened) ends the run.

Limits (``clip_impl.scoring.zero_shot``, checked before the model loads): at most 200,000 labels of at most
1,000 characters each, a labels text (``--labels-file``) of at most 16 Mi characters, at most 100 templates
and 200,000 label x template texts of 32 Mi characters in all.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

import torch

from ..clip_impl.scoring import (
    DEFAULT_TEMPLATE, MAX_LABEL_CHARS, MAX_LABELS, MAX_LABELS_TEXT, check_sizes, classify_embeddings, embed_image_files, label_embeddings,
    parse_labels, parse_templates,
)
from .csv_out import csv_output
from .embed_images import add_model_options, check_out, load_model
from .images import Progress, collect_images
from .options import positive

CSV_COLUMNS = ("path", "label", "probability", "top_k", "error")
SUMMARY_LABELS = 20  # labels named in the summary line; the others are counted
SUMMARY_CHARS = 60  # of a label named there


def add_arguments(p: argparse.ArgumentParser) -> None:
    """label images with the most probable of your categories (CLIP zero-shot), one CSV row per image"""
    add_model_options(p)
    labels = p.add_mutually_exclusive_group(required=True)
    labels.add_argument("--labels", help='the labels, separated by commas: "portrait,landscape,anime"')
    labels.add_argument("--labels-file", metavar="FILE",
                        help=f"a text file with one label a line (at most {MAX_LABELS:,} labels of at most "
                             f"{MAX_LABEL_CHARS:,} characters; case and spacing do not make a new label)")
    p.add_argument("--template", default=DEFAULT_TEMPLATE,
                   help=f"text around each label, {{}} is the label (default {DEFAULT_TEMPLATE!r}); several "
                        "templates separated by ' | ' are ensembled")
    p.add_argument("--top", type=positive, default=3, metavar="K", help="labels listed in the top_k column (default 3)")
    p.add_argument("--out", required=True, help="CSV file to write ('-' for stdout)")
    p.add_argument("images", nargs="+", metavar="IMAGE_OR_DIR", help="image files and folders (searched recursively)")


def read_labels(args) -> list[str]:
    """The labels of ``--labels`` (comma-separated) or ``--labels-file`` (one a line); ValueError if bad.

    The file is read up to MAX_LABELS_TEXT characters (one more says it is too long), opened without
    blocking, so a FIFO nobody writes to reads as empty instead of waiting forever.
    """
    if args.labels is not None:
        return parse_labels(args.labels, ",")
    try:
        fd = os.open(args.labels_file, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)  # blocking reads again: a pipe with a writer is read to its end
        with open(fd, encoding="utf-8-sig") as f:
            text = f.read(MAX_LABELS_TEXT + 1)
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"--labels-file {args.labels_file}: cannot read it ({e})") from e
    if len(text) > MAX_LABELS_TEXT:
        raise ValueError(
            f"--labels-file {args.labels_file}: longer than {MAX_LABELS_TEXT:,} characters (the limit on a labels "
            f"text): give one label a line, at most {MAX_LABELS:,} labels of at most {MAX_LABEL_CHARS:,} characters"
        )
    try:
        return parse_labels(text)
    except ValueError as e:
        raise ValueError(f"--labels-file {args.labels_file}: {e}") from e


def run(args) -> int:
    labels, templates = read_labels(args), parse_templates(args.template)
    check_sizes(labels, templates)
    check_out(args.out)
    paths = collect_images(args.images)
    if not paths:
        raise ValueError(f"no .png/.jpg/.jpeg/.webp images in {', '.join(args.images)}")
    model, _name = load_model(args)
    classifier, notes = label_embeddings(model, labels, templates)
    counts = [0] * len(labels)  # images per label, by index
    index_of = {label: i for i, label in enumerate(labels)}
    progress = Progress(len(paths), label="classifying")
    with csv_output(args.out) as out, contextlib.closing(progress):
        writer = out.writer
        writer.writerow(CSV_COLUMNS)
        for batch in embed_image_files(model, paths, args.batch_size):
            good = [item for item in batch if item.embedding is not None]
            result = None
            if good:
                embeds = torch.stack([item.embedding for item in good])
                result = classify_embeddings(model, embeds, labels, templates, classifier, notes)
            row = 0
            for item in batch:
                if item.embedding is None:
                    writer.writerow([out.path(item.path), "", "", "", out.cell(item.error)])
                    continue
                top = result.top(row, args.top)
                counts[index_of[top[0][0]]] += 1
                top_k = ";".join(f"{name}:{p:.6f}" for name, p in top)
                writer.writerow([out.path(item.path), out.cell(top[0][0]), f"{top[0][1]:.6f}", out.cell(top_k), ""])
                row += 1
            out.stream.flush()  # rows so far survive an interrupted run
            progress.advance(len(batch))
    _summary(counts, len(paths), labels, model, notes, args)
    return 0


def _summary(counts: list[int], total: int, labels: list[str], model, notes: list[str], args) -> None:
    from ..clip_impl.scoring import logit_factor

    stream = sys.stderr if args.out == "-" else sys.stdout
    done = sum(counts)
    line = f"classified {done} of {total} image{'s' if total != 1 else ''}"
    if total - done:
        line += f" ({total - done} failed: see the error column)"
    # Most frequent first, then in the order given: one sort of (count, index) pairs, linear in the labels.
    order = sorted(range(len(labels)), key=lambda i: (-counts[i], i))
    shown = order[:SUMMARY_LABELS]
    per_label = ", ".join(f"{_short(labels[i])} {counts[i]}" for i in shown)
    if len(order) > len(shown):
        rest = order[len(shown):]
        per_label += f", and {len(rest):,} more labels ({sum(counts[i] for i in rest)} images)"
    line += f": {per_label}; logits = cosine x {logit_factor(model)[1]}"
    print(line + (f" -> {args.out}" if args.out != "-" else ""), file=stream)
    for note in notes:
        print(f"note: {note}", file=stream)


def _short(label: str) -> str:
    return label if len(label) <= SUMMARY_CHARS else label[: SUMMARY_CHARS - 3] + "..."
