"""Command line: ``python -m clip_suite encode|tokens ...`` (and ``score``, see ``score_cli.py``).

Bad input ends with exit code 2 and one line on stderr that says what was wrong and what to do.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from .chunking import CHUNKINGS, MAX_COMMA_BACKTRACK, chunk_prompt, describe_chunks
from .clip_skip import APPLIES_TO
from .encode import EMPTY_PROMPT_MODES, POOLED_MODES, WEIGHTINGS, EncodeSettings
from .loading import ARCHITECTURES, PRECISIONS

_SYNTAX = {"comfy": "comfy", "a1111": "a1111", "a1111_no_norm": "a1111", "none": "none"}
SUBCOMMANDS: dict = {}  # name -> (add_arguments(parser), run(args) -> int); score registers itself


def _backtrack(value: str) -> int:
    n = int(value)
    if not 0 <= n <= MAX_COMMA_BACKTRACK:
        raise argparse.ArgumentTypeError(f"must be 0..{MAX_COMMA_BACKTRACK}, got {n}")
    return n


def _chunk_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--chunking", choices=CHUNKINGS, default="comfy", help="chunk packing rule (default comfy)")
    p.add_argument(
        "--comma-backtrack", type=_backtrack, default=20, metavar="N",
        help="a1111 chunking: move text after a comma at most N tokens back to the next chunk (0 = off)",
    )
    p.add_argument("--weighting", choices=WEIGHTINGS, default="comfy", help="weighting syntax and maths")
    p.add_argument("--embeddings", metavar="DIR", help="folder of textual-inversion embeddings")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m clip_suite", description="CLIP text encoding and scoring")
    sub = parser.add_subparsers(dest="command", required=True)

    enc = sub.add_parser("encode", help="encode a prompt to conditioning tensors (.safetensors)")
    enc.add_argument("--model", required=True, help="checkpoint, text encoder file or diffusers folder")
    enc.add_argument("--model-2", help="second file (SDXL: clip_l + clip_g as two files)")
    enc.add_argument("--prompt", required=True, help="prompt (SDXL: for CLIP-G, and CLIP-L unless --prompt-l)")
    enc.add_argument("--prompt-l", help="SDXL: separate prompt for CLIP-L")
    enc.add_argument("--clip-skip", type=int, default=0, metavar="K",
                     help="layers skipped beyond the model's native layer (0 = native; A1111 'Clip skip 2' on SD1.x = 1)")
    enc.add_argument("--clip-skip-applies-to", choices=APPLIES_TO, default="both", help="SDXL: which towers skip")
    _chunk_options(enc)
    enc.add_argument("--pooled", choices=POOLED_MODES, default="first_chunk")
    enc.add_argument("--empty-prompt", choices=EMPTY_PROMPT_MODES, default="encode")
    enc.add_argument("--precision", choices=PRECISIONS, default="auto")
    enc.add_argument("--architecture", choices=ARCHITECTURES, default="auto")
    enc.add_argument("--out", required=True, help="output .safetensors (cond, pooled, settings as metadata)")

    tok = sub.add_parser("tokens", help="show how a prompt splits into 77-token chunks (no model needed)")
    tok.add_argument("text", help="the prompt")
    _chunk_options(tok)
    tok.add_argument("--json", action="store_true", help="print one JSON object")

    for name, (add_arguments, _run) in SUBCOMMANDS.items():
        add_arguments(sub.add_parser(name, help=add_arguments.__doc__))
    return parser


def _load_embeddings(folder):
    if not folder:
        return None
    from .embeddings import EmbeddingLibrary

    return EmbeddingLibrary([folder])


def run_tokens(args) -> int:
    library = _load_embeddings(args.embeddings)
    resolver = library.resolver("l", _SYNTAX[args.weighting]) if library else None
    chunks = chunk_prompt(
        args.text,
        syntax=_SYNTAX[args.weighting],
        chunking=args.chunking,
        comma_backtrack=args.comma_backtrack,
        resolve_embedding=resolver,
    )
    report = describe_chunks(chunks)
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{report['tokens']} tokens, {report['chunks']} chunk{'s' if report['chunks'] != 1 else ''}")
    for i, (n, tail) in enumerate(zip(report["chunk_tokens"], report["boundaries"]), 1):
        print(f"  chunk {i}: {n}/75 tokens, ends with: ...{tail}")
    return 0


def run_encode(args) -> int:
    from safetensors.torch import save_file

    from .encode import encode_prompt
    from .loading import load_clip

    paths = [args.model] + ([args.model_2] if args.model_2 else [])
    model = load_clip(paths, architecture=args.architecture, precision=args.precision)
    settings = EncodeSettings(
        clip_skip=args.clip_skip,
        clip_skip_applies_to=args.clip_skip_applies_to,
        chunking=args.chunking,
        comma_backtrack=args.comma_backtrack,
        weighting=args.weighting,
        pooled=args.pooled,
        empty_prompt=args.empty_prompt,
    )
    out = encode_prompt(model, args.prompt, settings, text_l=args.prompt_l, embeddings=_load_embeddings(args.embeddings))
    layers = {t: {"layer": c.layer, "layer_norm": c.layer_norm, "of": c.num_layers} for t, c in out.layers.items()}
    metadata = {
        "architecture": out.family,
        "layers": json.dumps(layers),
        "chunks": str(out.chunks),
        "settings": json.dumps(settings.__dict__),
        "warnings": json.dumps(out.warnings),
    }
    tensors = {"cond": out.cond.float().cpu().contiguous(), "pooled": out.pooled.float().cpu().contiguous()}
    save_file(tensors, args.out, metadata=metadata)
    desc = ", ".join(c.describe(t) for t, c in out.layers.items())
    print(
        f"{out.family}: {out.chunks} chunk{'s' if out.chunks != 1 else ''}, {desc}; "
        f"cond {tuple(tensors['cond'].shape)}, pooled {tuple(tensors['pooled'].shape)} -> {args.out}"
    )
    for w in out.warnings:
        print(f"warning: {w}", file=sys.stderr)
    return 0


def main(argv=None) -> int:
    """Entry point; returns the exit code (2 on bad input)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    from . import score_cli  # noqa: F401  (registers the score subcommand in SUBCOMMANDS)

    args = build_parser().parse_args(argv)
    try:
        if args.command == "tokens":
            return run_tokens(args)
        if args.command == "encode":
            return run_encode(args)
        return SUBCOMMANDS[args.command][1](args)
    except (ValueError, OSError) as e:  # ModelFileError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2
