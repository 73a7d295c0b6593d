"""``python -m clip_suite classify``: zero-shot labels for many images, one CSV row per image.

    python -m clip_suite classify --model FILE [--model-2 FILE] (--labels "a,b,c" | --labels-file F)
        [--template T] [--top K] --out labels.csv IMAGE_OR_DIR...

Each image gets the most probable of the labels (``clip_impl.scoring.zero_shot``: softmax over the labels of the
model's ``exp(logit_scale)`` x cosine, 100 x cosine for a text encoder + clip_vision pair; several
templates separated by ``|`` are ensembled). CSV columns: path (as given or found), label, probability
(6 decimals), top_k (``label:prob;label:prob...``, best first), error (empty on success). An unreadable
image gets a row with the reason and the run goes on; bad arguments end it with exit code 2. A progress
bar goes to stderr on a terminal; a summary line (images per label) ends the run.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import sys

import torch

from ..clip_impl.scoring import (
    DEFAULT_TEMPLATE, classify_embeddings, embed_image_files, label_embeddings, parse_labels, parse_templates,
)
from .csv_out import csv_output
from .embed_images import add_model_options, check_out, load_model
from .images import Progress, collect_images
from .options import positive

CSV_COLUMNS = ("path", "label", "probability", "top_k", "error")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """label images with the most probable of your categories (CLIP zero-shot), one CSV row per image"""
    add_model_options(p)
    labels = p.add_mutually_exclusive_group(required=True)
    labels.add_argument("--labels", help='the labels, separated by commas: "portrait,landscape,anime"')
    labels.add_argument("--labels-file", metavar="FILE", help="a text file with one label a line")
    p.add_argument("--template", default=DEFAULT_TEMPLATE,
                   help=f"text around each label, {{}} is the label (default {DEFAULT_TEMPLATE!r}); several "
                        "templates separated by ' | ' are ensembled")
    p.add_argument("--top", type=positive, default=3, metavar="K", help="labels listed in the top_k column (default 3)")
    p.add_argument("--out", required=True, help="CSV file to write ('-' for stdout)")
    p.add_argument("images", nargs="+", metavar="IMAGE_OR_DIR", help="image files and folders (searched recursively)")


def read_labels(args) -> list[str]:
    """The labels of ``--labels`` (comma-separated) or ``--labels-file`` (one a line); ValueError if bad."""
    if args.labels is not None:
        return parse_labels(args.labels, ",")
    try:
        with open(args.labels_file, encoding="utf-8-sig") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"--labels-file {args.labels_file}: cannot read it ({e})") from e
    return parse_labels(text)


def run(args) -> int:
    labels, templates = read_labels(args), parse_templates(args.template)
    check_out(args.out)
    paths = collect_images(args.images)
    if not paths:
        raise ValueError(f"no .png/.jpg/.jpeg/.webp images in {', '.join(args.images)}")
    model, _name = load_model(args)
    classifier, notes = label_embeddings(model, labels, templates)
    counts: collections.Counter = collections.Counter()
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
                counts[top[0][0]] += 1
                top_k = ";".join(f"{name}:{p:.6f}" for name, p in top)
                writer.writerow([out.path(item.path), out.cell(top[0][0]), f"{top[0][1]:.6f}", out.cell(top_k), ""])
                row += 1
            out.stream.flush()  # rows so far survive an interrupted run
            progress.advance(len(batch))
    _summary(counts, len(paths), labels, model, notes, args)
    return 0


def _summary(counts, total: int, labels: list[str], model, notes: list[str], args) -> None:
    from ..clip_impl.scoring import logit_factor

    stream = sys.stderr if args.out == "-" else sys.stdout
    done = sum(counts.values())
    line = f"classified {done} of {total} image{'s' if total != 1 else ''}"
    if total - done:
        line += f" ({total - done} failed: see the error column)"
    order = sorted(labels, key=lambda name: (-counts[name], labels.index(name)))  # most frequent first
    per_label = ", ".join(f"{label} {counts[label]}" for label in order)
    line += f": {per_label}; logits = cosine x {logit_factor(model)[1]}"
    print(line + (f" -> {args.out}" if args.out != "-" else ""), file=stream)
    for note in notes:
        print(f"note: {note}", file=stream)
