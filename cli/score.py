"""``python -m clip_suite score``: CLIP scores (and aesthetic scores) for many images, one CSV row per image.

    python -m clip_suite score --model FILE [--model-2 FILE] [--prompt TEXT | --prompts-from-metadata]
        [--aesthetic HEAD] [--scale clipscore_100|clipscore_2_5|cosine|logit] [--fit crop|pad]
        [--rank-by score|aesthetic]
        [--batch-size N] [--workers N] [--precision auto|fp32|fp16|bf16]
        [--copy-to DIR [--min-score X] [--top-per-prompt K]] --out scores.csv IMAGE_OR_DIR...

Folders are searched recursively for .png/.jpg/.jpeg/.webp (other files are skipped); files named on the
command line are read whatever their suffix; anything but a regular file (a FIFO, a device) gets an error
row. CSV columns: path (as given or found), prompt, score (6 decimals; empty on failure), model, error (the
reason on failure, including a score that came out NaN or infinite, which is no score: it is left empty,
never ranked and never passes --min-score; on success empty, or notes such as "note: the prompt was cut ..."), rank (1 = best among
the images that share its prompt: these scores compare only within one prompt), truncated (yes when the
prompt was cut to 75 tokens, keeping the end-of-text token); then probability (``--scale logit``: softmax of
the logits over the images sharing the prompt, PickScore's probability of being picked) and aesthetic
(``--aesthetic``). Cells are safe to open in a spreadsheet: text starting with = + - @ tab or CR gets a
leading ', characters the output cannot encode are written as backslash escapes, and a cell holds at most
8,192 characters (the rest is cut, and the cell says so). ``--prompt -`` reads the prompt from standard
input. An image that cannot be read, or has no prompt in its metadata, gets a row with the reason and the
run goes on (exit code 0); bad arguments or a model that cannot score end the run with exit code 2. Images
are decoded and resized in worker processes while the model runs (``clip_impl/images/loader.py``). A progress bar
goes to stderr when it is a terminal; a summary line (count, mean, min, max) ends the run.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from dataclasses import dataclass, field

import torch

from ..clip_impl.images import FITS, ImageLoader, default_workers
from ..clip_impl.text import WEIGHTINGS, weighting_syntax
from ..clip_impl.scoring import (
    SCALES, Scale, ScoringPrompt, apply_scale, logit_factor, not_finite_reasons, pixel_embeddings, prepare_prompt,
    scoring_towers, text_embedding,
)
from .copy_images import copy_files
from .csv_out import csv_output
from .images import Progress, collect_images
from .options import add_device_options, positive, resolve_device
from .score_options import RANK_BYS, RankBy, ScoreOptions, finite_float

log = logging.getLogger(__name__)

CSV_COLUMNS = ("path", "prompt", "score", "model", "error", "rank", "truncated")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """score images against prompts (CLIPScore, PickScore, HPS v2) and with LAION aesthetic heads, one CSV row per image"""
    p.add_argument("--model", required=True, help="a full CLIP, or a text encoder (then give --model-2)")
    p.add_argument("--model-2", help="the clip_vision file of the same CLIP as the --model text encoder")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--prompt", help="score every image against this prompt")
    which.add_argument("--prompts-from-metadata", action="store_true",
                       help="score each image against its own prompt (ComfyUI graph, else A1111 parameters)")
    p.add_argument("--aesthetic", metavar="HEAD",
                   help="a LAION aesthetic predictor head (.pth/.pt/.safetensors, v1 linear or v2 MLP): adds an "
                        "aesthetic column; works without a prompt")
    p.add_argument("--scale", choices=SCALES, default="clipscore_100",
                   help="clipscore_100 = max(100 cos, 0) (default), clipscore_2_5 = 2.5 max(cos, 0), cosine "
                        "(HPS v2's score), logit = exp(logit_scale) cos (PickScore's score; adds a probability column)")
    p.add_argument("--fit", choices=FITS, default="crop",
                   help="crop: CLIP's centre crop (default; CLIPScore, PickScore, aesthetic heads); pad: the long side "
                        "to the model's size and black bars, HPS v2's own preprocessing (use it with HPS checkpoints)")
    p.add_argument("--rank-by", choices=RANK_BYS,
                   help="what rank, --min-score and --top-per-prompt use (default: score with a prompt, else aesthetic)")
    p.add_argument("--batch-size", type=positive, default=8, metavar="N", help="images per forward pass (default 8)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help=f"processes decoding and resizing images while the model runs (default {default_workers()} "
                        "here: the cores but one, none for under 16 images; 0 = in this process)")
    p.add_argument("--weighting", choices=WEIGHTINGS, default="comfy",
                   help="weighting syntax removed from --prompt before scoring (metadata prompts use their source's)")
    add_device_options(p)
    p.add_argument("--copy-to", metavar="DIR",
                   help="copy the images that pass --min-score/--top-per-prompt (all scored ones without them) "
                        "into DIR; never moves or deletes, skips files already copied")
    p.add_argument("--min-score", type=finite_float, metavar="X",
                   help="--copy-to: only images scoring at least X (rank-by units; a finite number). An image whose "
                        "score is not finite (NaN, inf) never passes: its error column says why")
    p.add_argument("--top-per-prompt", type=positive, metavar="K", help="--copy-to: only the K best images of each prompt")
    p.add_argument("--out", required=True, help="CSV file to write ('-' for stdout)")
    p.add_argument("images", nargs="+", metavar="IMAGE_OR_DIR", help="image files and folders (searched recursively)")
    p.set_defaults(score_parser=p)


def metadata_prompt(img) -> tuple[str, str, str, str]:
    """(prompt text, its weighting syntax, "", note) from an open image's metadata (note: e.g. the prompt was
    cut), or ("", "", reason, ""). Runs in the image loader's worker processes (module level, so they can
    import it)."""
    from ..clip_impl.images import prompt_from_image

    try:
        found = prompt_from_image(img)
    except ValueError as e:
        return "", "", str(e), ""
    return found.text, found.syntax, "", found.note


@dataclass
class _Row:
    """One image's outcome: the prompt as found, its cosine / aesthetic score, or the reason it has none."""

    path: str
    prompt: str
    error: str = ""
    cosine: float | None = None
    score: float | None = None
    aesthetic: float | None = None
    truncated: bool | None = None  # None: no prompt was scored
    rank: int | None = None
    probability: float | None = None
    notes: list[str] = field(default_factory=list)  # what was done on the way (image reduced, prompt cut)
    not_finite: bool = False  # a score or aesthetic score came out NaN or infinite (the error column says why)


def run(args) -> int:
    opts = ScoreOptions.from_args(args)
    fixed = prepare_prompt(opts.prompt, weighting_syntax(opts.weighting)) if opts.prompt is not None else None
    paths = collect_images(opts.images)
    if not paths:
        raise ValueError(f"no .png/.jpg/.jpeg/.webp images in {', '.join(opts.images)}")
    head = None
    if opts.aesthetic:
        from ..clip_impl.scoring import load_head

        head = load_head(opts.aesthetic)
    workers = default_workers(len(paths)) if opts.workers is None else opts.workers
    threads = torch.get_num_threads()
    try:
        # The loader's workers take cores of their own: the model gets the rest (an OpenMP team that shares
        # a core with a worker waits for it at every barrier, which costs more than the thread gives).
        if workers > 0:
            torch.set_num_threads(max(1, min(threads, (os.cpu_count() or 1) - workers)))
        rows, name, with_head, interrupted = _score_files(opts, paths, fixed, head, workers)
    finally:
        torch.set_num_threads(threads)
    _rank(rows, opts.rank_by, opts.scale)
    _write(rows, opts.out, opts.scale, name, with_head)
    copied = None
    if opts.copy_to:
        passing = [r.path for r in rows if _passes(r, opts)]
        copied = (len(passing), copy_files(passing, opts.images, opts.copy_to))
    _summary(rows, opts, copied)
    if interrupted:
        print(f"interrupted: {len(rows)} of {len(paths)} images scored and written", file=sys.stderr)
        return 130
    return 0


def _score_files(
    opts: ScoreOptions, paths: list[str], fixed: ScoringPrompt | None, head, workers: int
) -> tuple[list, str, bool, bool]:
    """(rows, model name, whether there is an aesthetic column, interrupted): the model loads while the
    workers start."""
    with ImageLoader(workers) as loader:  # workers start while the model loads
        model = _load_model(opts)
        if opts.has_prompt:
            scoring_towers(model)  # refuse a model that cannot score before any image is read
        if head is not None:
            from ..clip_impl.scoring import check_fits

            check_fits(head, model.vision, os.path.basename(os.path.normpath(opts.model)))
        name = "+".join(os.path.basename(os.path.normpath(f)) for f in [opts.model, opts.model_2] if f)
        rows, interrupted = _score_all(model, loader, paths, fixed, opts, head)
        return rows, name, head is not None, interrupted


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX); elsewhere torch emulates it, slowly."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _load_model(opts: ScoreOptions):
    """The model; ``--precision bf16`` keeps the text tower fp32 and runs only the vision tower in bf16
    (the text embedding is computed once per prompt, the images are where the time goes)."""
    from ..clip_impl.weights import load_clip
    from ..clip_impl.weights import vision_in_dtype

    device = resolve_device(opts.device)
    files = [opts.model] + ([opts.model_2] if opts.model_2 else [])
    bf16 = opts.precision == "bf16"
    model = load_clip(files, precision="fp32" if bf16 else opts.precision, device=device, with_vision=True)
    if bf16:
        if torch.device(device).type == "cpu" and not cpu_has_bf16():
            log.warning("--precision bf16: this CPU has no native bf16 (AVX512-BF16/AMX); it is emulated and "
                        "slower than fp32 here")
        model.vision = vision_in_dtype(model.vision, torch.bfloat16)
    return model


def _score_all(
    model, loader: ImageLoader, paths: list[str], fixed: ScoringPrompt | None, opts: ScoreOptions, head
) -> tuple[list[_Row], bool]:
    """Rows for the images in order, and whether Ctrl-C stopped the run (the rows so far are kept: ranks
    need every row of a prompt, so the CSV is written at the end)."""
    vision = model.vision
    read_extra = metadata_prompt if opts.prompts_from_metadata else None
    factor, _ = logit_factor(model)
    rows: list[_Row] = []
    batch: list = []
    progress = Progress(len(paths))
    try:
        for item in loader.load(paths, vision.config.image_size, read_extra, opts.fit):
            batch.append(item)
            if len(batch) == opts.batch_size:
                rows += _score_batch(model, batch, fixed, opts, head, factor)
                progress.advance(len(batch))
                batch = []
        if batch:
            rows += _score_batch(model, batch, fixed, opts, head, factor)
            progress.advance(len(batch))
    except KeyboardInterrupt:
        return rows, True
    finally:
        progress.close()
    return rows, False


def _score_batch(model, batch, fixed: ScoringPrompt | None, opts: ScoreOptions, head, factor: float) -> list[_Row]:
    """One row per loaded image, in order; the vision tower runs once for the batch."""
    rows, ok, texts = [], [], []
    for item in batch:
        raw = fixed.text if fixed is not None else ""
        row = _Row(item.path, raw, error=item.error, notes=list(item.notes))
        rows.append(row)
        if item.error:
            continue
        ok.append((row, item.pixels))
        if fixed is None and not opts.prompts_from_metadata:
            continue
        try:
            prompt = fixed
            if prompt is None:
                raw, syntax, reason, note = item.extra
                row.prompt = raw
                if reason:
                    raise ValueError(reason)
                if note:
                    row.notes.append(note)
                prompt = prepare_prompt(raw, syntax)
            texts.append((row, text_embedding(model, prompt)))
            row.truncated = prompt.truncated
        except ValueError as e:
            row.error = str(e)  # no prompt to score; the aesthetic score (if asked) is still given
    if not ok:
        return rows
    vision = model.vision
    pixels = torch.stack([p for _, p in ok]).to(vision.device)
    embeds = pixel_embeddings(vision, pixels)
    index = {id(r): i for i, (r, _) in enumerate(ok)}
    for row, txt in texts:
        i = index[id(row)]
        cosine = float(embeds[i] @ txt.to(embeds.device))
        score = float(apply_scale(torch.tensor(cosine), opts.scale, factor))
        reasons = not_finite_reasons([score], embeds[i : i + 1], text=txt)
        if reasons:  # no score: never ranked, never passes --min-score; the error column says why
            _add_error(row, reasons[0])
            continue
        row.cosine, row.score = cosine, score
    if head is not None:
        with torch.inference_mode():
            values = head(embeds).tolist()
        reasons = not_finite_reasons(values, embeds, what="aesthetic score", head=head.source or head.kind)
        for i, ((row, _), value) in enumerate(zip(ok, values)):
            if i in reasons:
                _add_error(row, reasons[i])
            else:
                row.aesthetic = value
    return rows


def _add_error(row: _Row, reason: str) -> None:
    row.error = f"{row.error}; {reason}" if row.error else reason
    row.not_finite = True


def _rank(rows: list[_Row], rank_by: RankBy, scale: Scale) -> None:
    """Rank within each prompt (1 = best; by cosine for CLIP scores, so clamped ties still order; then by
    path order), and on ``logit`` the softmax over the prompt's images."""
    key = (lambda r: r.cosine) if rank_by == "score" else (lambda r: r.aesthetic)
    groups: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        if key(row) is not None:
            groups.setdefault(row.prompt if rank_by == "score" else "", []).append(i)
    for members in groups.values():
        for rank, i in enumerate(sorted(members, key=lambda i: (-key(rows[i]), i)), start=1):
            rows[i].rank = rank
    if scale == "logit":
        by_prompt: dict[str, list[_Row]] = {}
        for row in rows:
            if row.score is not None:
                by_prompt.setdefault(row.prompt, []).append(row)
        for members in by_prompt.values():
            probs = torch.softmax(torch.tensor([r.score for r in members], dtype=torch.float64), dim=0)
            for row, p in zip(members, probs.tolist()):
                row.probability = p


def _passes(row: _Row, opts: ScoreOptions) -> bool:
    value = row.score if opts.rank_by == "score" else row.aesthetic
    if value is None or row.rank is None or not math.isfinite(value):
        return False
    if opts.min_score is not None and value < opts.min_score:
        return False
    return opts.top_per_prompt is None or row.rank <= opts.top_per_prompt


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.6f}"


def _write(rows: list[_Row], out_path: str, scale: Scale, name: str, with_aesthetic: bool) -> None:
    columns = list(CSV_COLUMNS) + (["probability"] if scale == "logit" else []) + (["aesthetic"] if with_aesthetic else [])
    with csv_output(out_path) as out:
        out.writer.writerow(columns)
        for r in rows:
            truncated = "" if r.truncated is None else ("yes" if r.truncated else "no")
            error = r.error or "; ".join(f"note: {n}" for n in r.notes)
            line = [out.path(r.path), out.cell(r.prompt), _fmt(r.score), out.cell(name), out.cell(error),
                    "" if r.rank is None else r.rank, truncated]
            if scale == "logit":
                line.append(_fmt(r.probability))
            if with_aesthetic:
                line.append(_fmt(r.aesthetic))
            out.writer.writerow(line)

def _stats(values: list[float]) -> str:
    return f"mean {sum(values) / len(values):.6f}, min {min(values):.6f}, max {max(values):.6f}"


def _summary(rows: list[_Row], opts: ScoreOptions, copied) -> None:
    stream = sys.stderr if opts.out == "-" else sys.stdout
    total = len(rows)
    prompted = opts.has_prompt
    scores = [r.score for r in rows if r.score is not None]
    aesthetic = [r.aesthetic for r in rows if r.aesthetic is not None]
    done = len(scores) if prompted else len(aesthetic)
    failed = total - done
    line = f"scored {done} of {total} image{'s' if total != 1 else ''}"
    if failed:
        line += f" ({failed} failed: see the error column)"
    if scores:
        line += f": {_stats(scores)} ({opts.scale})"
    if aesthetic:
        line += f"{'; aesthetic' if scores else ':'} {_stats(aesthetic)}" + ("" if scores else " (aesthetic)")
    not_finite = sum(1 for r in rows if r.not_finite)
    if not_finite:
        line += f"; {not_finite} with a score that is not finite (NaN or inf: never copied, see the error column)"
    truncated = sum(1 for r in rows if r.truncated and r.score is not None)
    if truncated:
        line += f"; {truncated} scored with a prompt truncated to 75 tokens"
    if copied is not None:
        passing, result = copied
        line += f"; {passing} passed, copied {result.copied} to {opts.copy_to}"
        if result.already_there:
            line += f" ({result.already_there} already there)"
    print(line + (f" -> {opts.out}" if opts.out != "-" else ""), file=stream)
