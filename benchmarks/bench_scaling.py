"""Prompt parsing and chunking time against prompt length: 10x the text must cost about 10x the time.

    python benchmarks/bench_scaling.py [--quick] [--max 1000000]

For ``comfy`` and ``a1111`` syntax (each with its own chunking), flat prompts (words and commas, a few
weights) and nested ones (brackets opened 3 characters apart: ``(a `` closed at the end in comfy syntax,
``(a:`` never closed in a1111 syntax, the shapes that were quadratic), at 10^4, 10^5 and 10^6 characters:
the best of a few runs for parsing alone and for the whole ``chunk_prompt`` (parse, tokenize, pack), and
the ratio to the size 10x smaller measured in the same run (linear = 10; tests/clip_impl/test_scaling.py
checks the ratio with slack on smaller sizes).
"""

from __future__ import annotations

import argparse
import gc
import time

FLAT = {"comfy": "a red fox, (snow:1.1), forest, ", "a1111": "a red fox, [snow] (forest:1.2), "}
NESTED = {"comfy": "(a ", "a1111": "(a:"}


def prompt(chars: int, syntax: str, shape: str) -> str:
    """A prompt of exactly ``chars`` characters of one shape (see the module docstring)."""
    if shape == "flat":
        unit = FLAT[syntax]
        return (unit * (chars // len(unit) + 1))[:chars]
    unit = NESTED[syntax]
    depth = chars // (len(unit) + (1 if syntax == "comfy" else 0))
    text = unit * depth + (")" * depth if syntax == "comfy" else "")
    return (text + "a" * chars)[:chars]


def best_time(fn, repeats: int, number: int = 1) -> float:
    """Seconds per call: the best of ``repeats`` measurements of ``number`` calls each.

    The best is the measurement least disturbed by other work on a shared machine; ``number`` > 1 makes a
    fast call's measurement last as long as a slow one's, so both meet the same load. As ``timeit`` does,
    the garbage collector is off while timing: its passes land at arbitrary points and are noise here.
    """
    best = float("inf")
    for _ in range(repeats):
        gc.disable()
        try:
            t0 = time.perf_counter()
            for _ in range(number):
                fn()
            best = min(best, (time.perf_counter() - t0) / number)
        finally:
            gc.enable()
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 run per size instead of 3")
    parser.add_argument("--max", type=int, default=1_000_000, help="largest size (default 10^6)")
    args = parser.parse_args()

    from clip_suite.clip_impl.text.chunking import chunk_prompt
    from clip_suite.clip_impl.text.syntax import parse_prompt

    chunk_prompt("warm up (the tokenizer) [a:1.2]", syntax="a1111")
    sizes = [n for n in (10_000, 100_000, 1_000_000, 10_000_000) if n <= args.max]
    print(f"{'syntax':7} {'shape':7} {'chars':>10} {'parse s':>9} {'x prev':>7} {'chunk s':>9} {'x prev':>7}")
    for syntax in ("comfy", "a1111"):
        for shape in ("flat", "nested"):
            prev = None
            for n in sizes:
                text = prompt(n, syntax, shape)
                repeats = 1 if args.quick or n >= 1_000_000 else 3
                parse_s = best_time(lambda: parse_prompt(text, syntax), repeats)
                chunk_s = best_time(lambda: chunk_prompt(text, syntax=syntax, chunking=syntax), repeats)
                ratios = ("", "") if prev is None else (f"{parse_s / prev[0]:.1f}", f"{chunk_s / prev[1]:.1f}")
                print(f"{syntax:7} {shape:7} {n:>10,} {parse_s:>9.3f} {ratios[0]:>7} {chunk_s:>9.3f} {ratios[1]:>7}", flush=True)
                prev = (parse_s, chunk_s)


if __name__ == "__main__":
    main()
