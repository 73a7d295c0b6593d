"""``python -m clip_suite score``: CLIPScore for many images, one CSV row per image (DESIGN 3 and 7).

    python -m clip_suite score --model FILE [--model-2 FILE] (--prompt TEXT | --prompts-from-metadata)
        [--scale clipscore_100|clipscore_2_5|cosine] [--batch-size N] --out scores.csv IMAGE_OR_DIR...

Folders are searched recursively for .png/.jpg/.jpeg/.webp (other files are skipped); files named on the
command line are read whatever their suffix; anything but a regular file (a FIFO, a device) gets an error
row. CSV columns: path (as given or found), prompt, score (6 decimals; empty on failure), model, error (the
reason on failure; on success empty, or notes such as "note: the prompt was cut ..."). Cells are safe to
open in a spreadsheet: text starting with = + - @ tab or CR gets a leading ', characters the output cannot
encode are written as backslash escapes, and a cell holds at most 8,192 characters (the rest is cut, and
the cell says so). ``--prompt -`` reads the prompt from standard input. An image that cannot be read, or has no
prompt in its metadata, gets a row with the reason and the run goes on (exit code 0); bad arguments or a
model that cannot score end the run with exit code 2. A progress bar goes to stderr when it is a terminal;
a summary line (count, mean, min, max) ends the run.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from dataclasses import dataclass, field

import torch

from ..clip_impl.preprocess import image_to_tensor, open_image, preprocess_images
from ..clip_impl.prompt import WEIGHTINGS, weighting_syntax
from ..clip_impl.similarity import (
    SCALES, apply_scale, pixel_embeddings, prepare_prompt, scoring_towers, text_embedding,
)
from .images import Progress, collect_images
from .options import add_device_options, positive, read_prompt, resolve_device

CSV_COLUMNS = ("path", "prompt", "score", "model", "error")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """score images against prompts (CLIPScore), one CSV row per image"""
    p.add_argument("--model", required=True, help="a full CLIP, or a text encoder (then give --model-2)")
    p.add_argument("--model-2", help="the clip_vision file of the same CLIP as the --model text encoder")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--prompt", help="score every image against this prompt")
    which.add_argument("--prompts-from-metadata", action="store_true",
                       help="score each image against its own prompt (ComfyUI graph, else A1111 parameters)")
    p.add_argument("--scale", choices=SCALES, default="clipscore_100",
                   help="clipscore_100 = max(100 cos, 0) (default), clipscore_2_5 = 2.5 max(cos, 0), cosine")
    p.add_argument("--batch-size", type=positive, default=8, metavar="N", help="images per forward pass (default 8)")
    p.add_argument("--weighting", choices=WEIGHTINGS, default="comfy",
                   help="weighting syntax removed from --prompt before scoring (metadata prompts use their source's)")
    add_device_options(p)
    p.add_argument("--out", required=True, help="CSV file to write ('-' for stdout)")
    p.add_argument("images", nargs="+", metavar="IMAGE_OR_DIR", help="image files and folders (searched recursively)")


def _read(path: str, size: int, fixed_prompt, vision, notes: list | None = None) -> tuple:
    """(pixels (1, 3, S, S), raw prompt, ScoringPrompt) for one image; ValueError with the reason.
    ``notes`` (a list) receives what was done on the way (image reduced, prompt cut)."""
    from ..clip_impl.image_metadata import prompt_from_image

    notes = notes if notes is not None else []
    img = open_image(path, notes)
    try:
        if fixed_prompt is not None:
            raw, prompt = fixed_prompt.text, fixed_prompt
        else:
            found = prompt_from_image(img)
            if found.note:
                notes.append(found.note)
            raw, prompt = found.text, prepare_prompt(found.text, found.syntax)
        pixels = preprocess_images(image_to_tensor(img, notes), size, vision.device, vision.compute_dtype)
    finally:
        img.close()
    return pixels, raw, prompt


@dataclass
class _Row:
    """One image's outcome: the prompt as found, and its cosine or the reason it has none."""

    path: str
    prompt: str
    error: str = ""
    cosine: float | None = None
    truncated: bool = False
    notes: list[str] = field(default_factory=list)


def _score_batch(model, batch: list[str], fixed_prompt) -> list[_Row]:
    """One row per image path of the batch, in order; the vision tower runs once for the batch."""
    _, vision = scoring_towers(model)
    rows, pixels, texts = [], [], []
    for path in batch:
        notes: list[str] = []
        try:
            pix, raw, prompt = _read(path, vision.config.image_size, fixed_prompt, vision, notes)
            texts.append(text_embedding(model, prompt))
            pixels.append(pix)
            rows.append(_Row(path, raw, truncated=bool(prompt.notes), notes=notes))
        # pillow raises many exception types on malformed files; each becomes that image's error row.
        except Exception as e:  # noqa: BLE001
            reason = str(e) if isinstance(e, ValueError) else f"cannot read the image ({type(e).__name__}: {e})"
            raw = fixed_prompt.text if fixed_prompt is not None else ""
            rows.append(_Row(path, raw, error=reason.replace(f"{path}: ", "", 1)))
    if pixels:
        images = pixel_embeddings(vision, torch.cat(pixels))
        cosines = (images * torch.stack([t.to(images.device) for t in texts])).sum(dim=-1).tolist()
        for row, cos in zip([r for r in rows if not r.error], cosines):
            row.cosine = cos
    return rows


def run(args) -> int:
    args.prompt = read_prompt(args.prompt)
    if args.prompt is not None and not args.prompt.strip():
        raise ValueError("--prompt is empty; give the prompt to score against, or use --prompts-from-metadata")
    if args.model_2 and not os.path.exists(args.model_2):
        raise ValueError(f"--model-2 {args.model_2} does not exist")
    fixed = prepare_prompt(args.prompt, weighting_syntax(args.weighting)) if args.prompt is not None else None
    out_dir = os.path.dirname(os.path.abspath(args.out))
    if args.out != "-" and not os.path.isdir(out_dir):
        raise ValueError(f"--out {args.out}: the folder {out_dir} does not exist")
    paths = collect_images(args.images)
    if not paths:
        raise ValueError(f"no .png/.jpg/.jpeg/.webp images in {', '.join(args.images)}")
    from ..clip_impl.loading import load_clip

    device = resolve_device(args.device)
    files = [args.model] + ([args.model_2] if args.model_2 else [])
    model = load_clip(files, precision=args.precision, device=device, with_vision=True)
    scoring_towers(model)  # refuse a model that cannot score before any image is read
    name = "+".join(os.path.basename(os.path.normpath(f)) for f in files)
    # backslashreplace: a lone surrogate (undecodable file name bytes, "\\ud800" in metadata) is written as an
    # escape instead of ending the run half-way.
    out = sys.stdout if args.out == "-" else open(args.out, "w", newline="", encoding="utf-8", errors="backslashreplace")
    try:
        scores, truncated = _write_rows(model, paths, fixed, args, name, out)
    finally:
        if out is not sys.stdout:
            out.close()
    _summary(scores, len(paths), truncated, args)
    return 0


def _write_rows(model, paths, fixed, args, name, out) -> tuple[list[float], int]:
    writer = csv.writer(out)
    encoding = getattr(out, "encoding", None) or "utf-8"
    writer.writerow(CSV_COLUMNS)
    progress = Progress(len(paths))
    scores, truncated = [], 0
    try:
        for start in range(0, len(paths), args.batch_size):
            batch = paths[start : start + args.batch_size]
            for row in _score_batch(model, batch, fixed):
                score = ""
                if row.cosine is not None:
                    value = float(apply_scale(torch.tensor(row.cosine), args.scale))
                    scores.append(value)
                    score = f"{value:.6f}"
                    truncated += row.truncated
                error = row.error or "; ".join(f"note: {n}" for n in row.notes)
                cells = [_path_text(row.path), row.prompt, score, name, error]
                writer.writerow([c if i == 2 else safe_cell(c, encoding) for i, c in enumerate(cells)])
            out.flush()  # rows so far survive an interrupted run
            progress.advance(len(batch))
    finally:
        progress.close()
    return scores, truncated


MAX_CELL_CHARS = 8192
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(text: str, encoding: str = "utf-8") -> str:
    """A CSV text cell that a spreadsheet shows as text and the output can encode.

    Cut to MAX_CELL_CHARS (saying how long it was); characters ``encoding`` cannot hold (lone surrogates)
    as backslash escapes; a leading = + - @ tab or CR (a formula to Excel/LibreOffice) behind a ``'``.
    """
    if len(text) > MAX_CELL_CHARS:
        text = text[:MAX_CELL_CHARS] + f" [... cut: {len(text):,} characters in all]"
    try:
        text.encode(encoding)
    except UnicodeEncodeError:
        text = text.encode(encoding, "backslashreplace").decode(encoding)
    except LookupError:  # an unknown encoding name on an odd stream: fall back to ASCII escapes
        text = text.encode("ascii", "backslashreplace").decode("ascii")
    if text.startswith(_FORMULA_STARTS):
        text = "'" + text
    return text


def _path_text(path: str) -> str:
    """A path for display: undecodable file-name bytes (surrogate escapes) as \\xNN."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        return os.fsencode(path).decode("utf-8", "backslashreplace") if _is_fs_escaped(path) else path


def _is_fs_escaped(path: str) -> bool:
    try:
        os.fsencode(path)
        return True
    except UnicodeEncodeError:
        return False


def _summary(scores: list[float], total: int, truncated: int, args) -> None:
    stream = sys.stderr if args.out == "-" else sys.stdout
    failed = total - len(scores)
    line = f"scored {len(scores)} of {total} image{'s' if total != 1 else ''}"
    if failed:
        line += f" ({failed} failed: see the error column)"
    if scores:
        mean = sum(scores) / len(scores)
        line += f": mean {mean:.6f}, min {min(scores):.6f}, max {max(scores):.6f} ({args.scale})"
    if truncated:
        line += f"; {truncated} scored with a prompt truncated to 75 tokens"
    print(line + (f" -> {args.out}" if args.out != "-" else ""), file=stream)
