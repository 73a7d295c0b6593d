"""``python -m clip_suite encode``: a prompt to conditioning tensors in a .safetensors file.

``cond``/``pooled`` hold the prompt's (first) encoding. When the prompt has more than one conditioning entry
(A1111 ``AND``, or schedules resolved with ``--steps``), every entry i is written as ``cond.i``/``pooled.i``
and the metadata ``schedule`` (JSON) gives each entry's steps, timestep percents, weight, text and tokens.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..clip_impl.clip_skip import APPLIES_TO
from ..clip_impl.text import EMPTY_PROMPT_MODES, POOLED_MODES, EncodeSettings
from ..clip_impl.weights import ARCHITECTURES, PRECISIONS
from .options import add_chunk_options, add_schedule_options, load_embeddings, read_prompt, schedule_lines


def add_arguments(p: argparse.ArgumentParser) -> None:
    """encode a prompt to conditioning tensors (.safetensors)"""
    p.add_argument("--model", required=True, help="checkpoint, text encoder file or diffusers folder")
    p.add_argument("--model-2", help="second file (SDXL: clip_l + clip_g as two files)")
    p.add_argument("--prompt", required=True, help="prompt (SDXL: for CLIP-G, and CLIP-L unless --prompt-l); '-' reads it from standard input")
    p.add_argument("--prompt-l", help="SDXL: separate prompt for CLIP-L")
    p.add_argument("--clip-skip", type=int, default=0, metavar="K",
                   help="layers skipped beyond the model's native layer (0 = native; A1111 'Clip skip 2' on SD1.x = 1)")
    p.add_argument("--clip-skip-applies-to", choices=APPLIES_TO, default="both", help="SDXL: which towers skip")
    add_chunk_options(p)
    p.add_argument("--pooled", choices=POOLED_MODES, default="first_chunk")
    p.add_argument("--empty-prompt", choices=EMPTY_PROMPT_MODES, default="encode")
    add_schedule_options(p)
    p.add_argument("--precision", choices=PRECISIONS, default="auto")
    p.add_argument("--architecture", choices=ARCHITECTURES, default="auto")
    p.add_argument("--out", required=True, help="output .safetensors (cond, pooled, settings as metadata)")


def run(args) -> int:
    from safetensors.torch import save_file

    from ..clip_impl.a1111 import encode_scheduled, plan_report
    from ..clip_impl.text import describe_chunks, prompt_chunks
    from ..clip_impl.weights import load_clip

    if args.prompt == "-" and args.prompt_l == "-":
        raise ValueError("--prompt - and --prompt-l -: standard input can give only one of them")
    args.prompt = read_prompt(args.prompt)
    args.prompt_l = read_prompt(args.prompt_l)
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
    embeddings = load_embeddings(args.embeddings)
    result = encode_scheduled(model, args.prompt, settings, args.steps, args.scheduler, text_l=args.prompt_l,
                              embeddings=embeddings)

    def count(t: str) -> int:  # token counts as ``tokens`` reports them, with the same chunking
        found = prompt_chunks(t, chunking=args.chunking, comma_backtrack=args.comma_backtrack,
                              weighting=args.weighting, embeddings=embeddings)
        return describe_chunks(found.chunks)["tokens"]

    schedule = plan_report(result.plan, count, result.percents)
    out = result.first
    layers = {t: {"layer": c.layer, "layer_norm": c.layer_norm, "of": c.num_layers} for t, c in out.layers.items()}
    metadata = {
        "architecture": out.family,
        "layers": json.dumps(layers),
        "chunks": str(out.chunks),
        "settings": json.dumps(settings.__dict__),
        "warnings": json.dumps(out.warnings),
    }
    tensors = {"cond": out.cond.float().cpu().contiguous(), "pooled": out.pooled.float().cpu().contiguous()}
    if len(result.entries) > 1:
        metadata["schedule"] = json.dumps(schedule)
        for i, e in enumerate(result.entries):
            tensors[f"cond.{i}"] = e.encoded.cond.float().cpu().clone()  # safetensors refuses shared storage
            tensors[f"pooled.{i}"] = e.encoded.pooled.float().cpu().clone()
    save_file(tensors, args.out, metadata=metadata)
    desc = ", ".join(c.describe(t) for t, c in out.layers.items())
    print(
        f"{out.family}: {out.chunks} chunk{'s' if out.chunks != 1 else ''}, {desc}; "
        f"cond {tuple(tensors['cond'].shape)}, pooled {tuple(tensors['pooled'].shape)} -> {args.out}"
    )
    if len(schedule["entries"]) > 1 or schedule["notes"]:
        for line in schedule_lines(schedule, args.scheduler):
            print(line)
    for w in out.warnings:
        print(f"warning: {w}", file=sys.stderr)
    return 0
