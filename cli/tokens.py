"""``python -m clip_suite tokens``: how a prompt splits into 77-token chunks (no model needed).

With ``--steps N`` (and ``--scheduler``) it also shows the A1111 schedule: each conditioning entry the
encoders would write (step range, timestep percent range, text and its token count), as ``schedule`` in
``--json``.
"""

from __future__ import annotations

import argparse
import json

from ..clip_impl.text import describe_chunks, prompt_chunks
from ..clip_impl.a1111 import plan_prompt, plan_report, step_percents
from .options import add_chunk_options, add_schedule_options, load_embeddings, read_prompt, schedule_lines


def add_arguments(p: argparse.ArgumentParser) -> None:
    """show how a prompt splits into 77-token chunks (no model needed)"""
    p.add_argument("text", help="the prompt ('-' reads it from standard input)")
    add_chunk_options(p)
    add_schedule_options(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")


def schedule_report(text: str, args, embeddings, text_l: str | None = None) -> dict:
    """``prompt_plan.plan_report`` for the CLI's settings (token counts with the same chunking)."""
    plan = plan_prompt(text, weighting=args.weighting, steps=args.steps, text_l=text_l)
    percents = step_percents(args.scheduler, args.steps) if plan.scheduled else None
    if percents is not None and len(percents) - 1 != args.steps:  # the scheduler runs another number of steps
        plan = plan_prompt(text, weighting=args.weighting, steps=args.steps, text_l=text_l,
                           sampler_steps=len(percents) - 1)

    counted: dict[str, dict] = {}

    def described(t: str) -> dict:
        if t not in counted:
            found = prompt_chunks(t, chunking=args.chunking, comma_backtrack=args.comma_backtrack,
                                  weighting=args.weighting, embeddings=embeddings)
            counted[t] = describe_chunks(found.chunks)
        return counted[t]

    def chunks_of(t: str, tl: str | None) -> int:  # as the encoders count an entry: its longer tower
        return max(described(t)["chunks"], described(tl)["chunks"] if tl else 0)

    return plan_report(plan, lambda t: described(t)["tokens"], percents, chunks_of=chunks_of)


def run(args) -> int:
    embeddings = load_embeddings(args.embeddings)
    text = read_prompt(args.text)  # "-": standard input
    found = prompt_chunks(
        text,
        chunking=args.chunking,
        comma_backtrack=args.comma_backtrack,
        weighting=args.weighting,
        embeddings=embeddings,
    )
    report = describe_chunks(found.chunks)
    schedule = schedule_report(text, args, embeddings) if args.steps else None
    if args.json:
        try:  # strict JSON: NaN and Infinity are not JSON (the library keeps every number finite)
            out = json.dumps({**report, "schedule": schedule} if schedule else report, allow_nan=False)
        except ValueError:
            raise ValueError("the report holds a number that is not finite (NaN or infinity); check the "
                             "prompt's weights") from None
        print(out)
        return 0
    print(f"{report['tokens']} tokens, {report['chunks']} chunk{'s' if report['chunks'] != 1 else ''}")
    for i, (n, tail) in enumerate(zip(report["chunk_tokens"], report["boundaries"]), 1):
        print(f"  chunk {i}: {n}/75 tokens, ends with: ...{tail}")
    if schedule:
        for line in schedule_lines(schedule, args.scheduler):
            print(line)
    return 0
