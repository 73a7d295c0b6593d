"""``score``'s settings as one typed, frozen object: read once from the parsed arguments and checked, then
passed to the helpers of ``score.py`` instead of the argparse namespace."""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass
from typing import Literal, get_args

from ..clip_impl.images import Fit
from ..clip_impl.scoring import Scale
from ..clip_impl.text import Weighting
from ..clip_impl.weights import Precision
from .copy_images import check_target
from .options import Device, read_prompt

def finite_float(text: str) -> float:
    """argparse type: a finite number (``nan`` and ``inf`` are refused: no score compares with NaN, so a NaN
    threshold would pass every image)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number; give a score such as 25 or 0.3")
    return value


RankBy = Literal["score", "aesthetic"]
RANK_BYS: tuple[RankBy, ...] = get_args(RankBy)


@dataclass(frozen=True, kw_only=True)
class ScoreOptions:
    """What ``score`` was asked to do, checked (see :meth:`from_args`)."""

    model: str
    model_2: str | None
    prompt: str | None  # the fixed prompt (``--prompt -`` already read from standard input), None without one
    prompts_from_metadata: bool
    aesthetic: str | None  # the aesthetic head file
    scale: Scale
    fit: Fit
    rank_by: RankBy  # resolved: score with a prompt, else aesthetic
    batch_size: int
    workers: int | None  # None: the default for the number of images
    weighting: Weighting
    precision: Precision
    device: Device
    copy_to: str | None
    min_score: float | None
    top_per_prompt: int | None
    out: str  # CSV file, "-" for standard output
    images: tuple[str, ...]

    @property
    def has_prompt(self) -> bool:
        """Whether images get a CLIP score (a fixed prompt or each image's own)."""
        return self.prompt is not None or self.prompts_from_metadata

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "ScoreOptions":
        """The options of a parsed ``score`` command line. Reads ``--prompt -`` from standard input; bad
        combinations raise ValueError (or end the run through the parser, as argparse does)."""
        prompt = read_prompt(args.prompt)  # "-": standard input
        has_prompt = prompt is not None or args.prompts_from_metadata
        if not has_prompt and not args.aesthetic:
            args.score_parser.error("give --prompt TEXT or --prompts-from-metadata (CLIP score), or --aesthetic HEAD")
        if prompt is not None and not prompt.strip():
            raise ValueError("--prompt is empty; give the prompt to score against, or use --prompts-from-metadata")
        if args.model_2 and not os.path.exists(args.model_2):
            raise ValueError(f"--model-2 {args.model_2} does not exist")
        rank_by = args.rank_by or ("score" if has_prompt else "aesthetic")
        if rank_by == "score" and not has_prompt:
            raise ValueError("--rank-by score needs --prompt or --prompts-from-metadata")
        if rank_by == "aesthetic" and not args.aesthetic:
            raise ValueError("--rank-by aesthetic needs --aesthetic HEAD")
        if args.min_score is not None and not math.isfinite(args.min_score):
            raise ValueError(f"--min-score {args.min_score}; give a finite number (no score compares with NaN)")
        if (args.min_score is not None or args.top_per_prompt is not None) and not args.copy_to:
            raise ValueError("--min-score and --top-per-prompt choose the images --copy-to copies; give --copy-to DIR")
        if args.copy_to:
            check_target(args.copy_to, args.images)
        if args.workers is not None and args.workers < 0:
            raise ValueError(f"--workers {args.workers}; use 0 (decode in this process) or more")
        out_dir = os.path.dirname(os.path.abspath(args.out))
        if args.out != "-" and not os.path.isdir(out_dir):
            raise ValueError(f"--out {args.out}: the folder {out_dir} does not exist")
        return cls(
            model=args.model, model_2=args.model_2, prompt=prompt, prompts_from_metadata=args.prompts_from_metadata,
            aesthetic=args.aesthetic, scale=args.scale, fit=args.fit, rank_by=rank_by, batch_size=args.batch_size,
            workers=args.workers, weighting=args.weighting, precision=args.precision, device=args.device,
            copy_to=args.copy_to, min_score=args.min_score, top_per_prompt=args.top_per_prompt, out=args.out,
            images=tuple(args.images),
        )
