"""``python -m clip_suite tokens``: how a prompt splits into 77-token chunks (no model needed)."""

from __future__ import annotations

import argparse
import json

from ..clip_impl.chunking import describe_chunks
from ..clip_impl.prompt import prompt_chunks
from .options import add_chunk_options, load_embeddings, read_prompt


def add_arguments(p: argparse.ArgumentParser) -> None:
    """show how a prompt splits into 77-token chunks (no model needed)"""
    p.add_argument("text", help="the prompt ('-' reads it from standard input)")
    add_chunk_options(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args) -> int:
    found = prompt_chunks(
        read_prompt(args.text),
        chunking=args.chunking,
        comma_backtrack=args.comma_backtrack,
        weighting=args.weighting,
        embeddings=load_embeddings(args.embeddings),
    )
    report = describe_chunks(found.chunks)
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{report['tokens']} tokens, {report['chunks']} chunk{'s' if report['chunks'] != 1 else ''}")
    for i, (n, tail) in enumerate(zip(report["chunk_tokens"], report["boundaries"]), 1):
        print(f"  chunk {i}: {n}/75 tokens, ends with: ...{tail}")
    return 0
