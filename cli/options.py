"""Argument types and option groups that several subcommands share."""

from __future__ import annotations

import argparse
from typing import Literal, get_args

from ..clip_impl.text import CHUNKINGS, MAX_COMMA_BACKTRACK, WEIGHTINGS
from ..clip_impl.weights import PRECISIONS

Device = Literal["auto", "cpu", "cuda"]
DEVICES: tuple[Device, ...] = get_args(Device)


def comma_backtrack(value: str) -> int:
    """argparse type: an int in 0..MAX_COMMA_BACKTRACK."""
    n = int(value)
    if not 0 <= n <= MAX_COMMA_BACKTRACK:
        raise argparse.ArgumentTypeError(f"must be 0..{MAX_COMMA_BACKTRACK}, got {n}")
    return n


def positive(value: str) -> int:
    """argparse type: an int of at least 1."""
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {n}")
    return n


def add_chunk_options(p: argparse.ArgumentParser) -> None:
    """``--chunking``, ``--comma-backtrack``, ``--weighting``, ``--embeddings``: the prompt pipeline's settings."""
    p.add_argument("--chunking", choices=CHUNKINGS, default="comfy", help="chunk packing rule (default comfy)")
    p.add_argument(
        "--comma-backtrack", type=comma_backtrack, default=20, metavar="N",
        help="a1111 chunking: move text after a comma at most N tokens back to the next chunk (0 = off)",
    )
    p.add_argument("--weighting", choices=WEIGHTINGS, default="comfy", help="weighting syntax and maths")
    p.add_argument("--embeddings", metavar="DIR", help="folder of textual-inversion embeddings")


def steps(value: str) -> int:
    """argparse type: an int in 0..MAX_STEPS (checked before any work is sized from it)."""
    from ..clip_impl.a1111 import MAX_STEPS

    n = int(value)
    if not 0 <= n <= MAX_STEPS:
        raise argparse.ArgumentTypeError(f"must be 0..{MAX_STEPS} ({MAX_STEPS} is the most ComfyUI's KSampler "
                                         f"takes; 0 = schedules not resolved), got {n}")
    return n


def add_schedule_options(p: argparse.ArgumentParser) -> None:
    """``--steps`` and ``--scheduler``: resolve A1111 prompt editing/alternation for a sampler run."""
    from ..clip_impl.a1111 import MAX_STEPS, SCHEDULERS

    p.add_argument("--steps", type=steps, default=0, metavar="N",
                   help=f"A1111 [a:b:when]/[a|b] schedules for N sampler steps, 0..{MAX_STEPS} (0 = not resolved)")
    p.add_argument("--scheduler", choices=SCHEDULERS, default="normal", help="the KSampler's scheduler (default normal)")


def schedule_lines(report: dict, scheduler: str) -> list[str]:
    """Human-readable lines for a ``prompt_plan.plan_report``: one per entry, then the notes."""
    lines = []
    if report["steps"]:
        lines.append(f"schedule: {report['prompts']} prompt{'s' if report['prompts'] != 1 else ''} over "
                     f"{report['steps']} steps ({scheduler}), {len(report['entries'])} entries")
    for e in report["entries"]:
        where = "all steps" if e["start_step"] is None else f"steps {e['start_step']}-{e['end_step']}"
        if "start_percent" in e:
            where += f", percent {e['start_percent']:.4f}-{e['end_percent']:.4f}"
        weight = f", weight {e['weight']:g}" if len(report["entries"]) > 1 or e["weight"] != 1 else ""
        lines.append(f"  {where}{weight}: {e['tokens']} tokens: {e['text']!r}")
    return lines + [f"note: {n}" for n in report["notes"]]


def add_device_options(p: argparse.ArgumentParser) -> None:
    """``--precision`` and ``--device`` of the image commands."""
    p.add_argument("--precision", choices=PRECISIONS, default="auto")
    p.add_argument("--device", choices=DEVICES, default="auto", help="auto: cuda when available")


def resolve_device(choice: Device) -> str:
    """``auto`` -> cuda when torch sees one, else cpu."""
    if choice != "auto":
        return choice
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_embeddings(folder: str | None):
    """An EmbeddingLibrary over ``folder`` (None when no folder was given)."""
    if not folder:
        return None
    from ..clip_impl.text import EmbeddingLibrary

    return EmbeddingLibrary([folder])


def read_prompt(value: str | None) -> str | None:
    """A prompt argument: ``-`` reads the whole of standard input (for prompts too long for a command line,
    whose arguments Linux caps at 128 KB each); undecodable bytes become U+FFFD; one trailing newline
    (as ``echo`` adds) is dropped."""
    if value != "-":
        return value
    import sys

    data = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode("utf-8", "surrogateescape")
    text = data.decode("utf-8", "replace")
    if text.endswith("\n"):
        text = text[:-2] if text.endswith("\r\n") else text[:-1]
    return text
