"""Time (and memory) against input size: 10x the input must cost about 10x.

    python benchmarks/bench_scaling.py [--quick] [--max 1000000] [--only prompts|duplicates|classify]
        [--max-images 20000] [--max-labels 200000] [--dim 768]

For ``comfy`` and ``a1111`` syntax (each with its own chunking), flat prompts (words and commas, a few
weights) and nested ones (brackets opened 3 characters apart: ``(a `` closed at the end in comfy syntax,
``(a:`` never closed in a1111 syntax, the shapes that were quadratic), at 10^4, 10^5 and 10^6 characters:
the best of a few runs for parsing alone and for the whole ``chunk_prompt`` (parse, tokenize, pack), and
the ratio to the size 10x smaller measured in the same run (linear = 10; tests/clip_impl/test_scaling.py
checks the ratio with slack on smaller sizes).

``duplicates`` (2,500 to 20,000 images) and ``classify`` labels (10,000 to 200,000) run the real command,
each size in a fresh child process (its own peak memory): seconds from ``cli.main``'s start to its end,
peak resident memory, and the ratios to the size before, with the size ratio beside them (linear: equal).

- duplicates: N embeddings of ``--dim`` floats, the index stubbed out: identical ones (every image links
  to every other, N(N-1)/2 pairs: the case that was quadratic in Python; now a block already one group is
  compared only with other groups, so the time is near-linear), then distinct random ones (no pair links:
  every pair must be compared, N^2 work by nature, done in torch blocks: the time per pair, ns/pair, stays
  flat). Memory grows with N only.
- classify: N labels from a file, one template, 8 images, a 1-layer 64-wide CLIP (the per-label work is
  what is measured, not a big text tower) on one torch thread (on a shared machine, the thread pool's
  wake-ups on tiny batches are noise larger than the work).
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


# Children: print {"seconds": ..., "peak_mib": ...} for one size (peak: VmHWM, see _common.peak_rss_mib).
_PEAK = """
def peak_mib():
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
"""
DUPLICATES_CHILD = _PEAK + """
import contextlib, io, json, os, sys, time, torch
from clip_suite.cli import duplicates, main
from clip_suite.cli.embed_images import Embedded

n, dim, kind = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
if kind == "identical":
    emb = torch.nn.functional.normalize(torch.ones(n, dim), dim=-1)
else:
    emb = torch.nn.functional.normalize(torch.randn(n, dim, generator=torch.Generator().manual_seed(0)), dim=-1)
paths = [f"img_{i:06d}.png" for i in range(n)]
duplicates.load_model = lambda args: (None, "stub")
duplicates.embed_folders = lambda args, model, inputs: Embedded(paths, emb, [], "index: stubbed")
t = time.perf_counter()
with contextlib.redirect_stderr(io.StringIO()):
    code = main(["duplicates", "--model", "stub", "--out", os.devnull, "folder"])
print(json.dumps({"seconds": time.perf_counter() - t, "peak_mib": peak_mib(), "code": code}))
"""
CLASSIFY_CHILD = _PEAK + """
import contextlib, io, json, os, sys, time, torch
from clip_suite.cli import main

torch.set_num_threads(1)
t = time.perf_counter()
with contextlib.redirect_stdout(io.StringIO()):
    code = main(["classify", "--model", sys.argv[1], "--labels-file", sys.argv[2], "--out", os.devnull, sys.argv[3]])
print(json.dumps({"seconds": time.perf_counter() - t, "peak_mib": peak_mib(), "code": code}))
"""


def run_child(code: str, *args) -> dict:
    """One size in a fresh process: {"seconds", "peak_mib", "code"}."""
    out = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def print_series(name: str, sizes: list[int], measure, extra=None) -> None:
    """Run ``measure(n)`` per size; print seconds and peak MiB with their ratios to the size before."""
    print(f"{name:10} {'size':>8} {'x size':>7} {'seconds':>9} {'x prev':>7} {'peak MiB':>9} {'x prev':>7}"
          + (f" {extra[0]:>9}" if extra else ""))
    prev = None
    for n in sizes:
        r = measure(n)
        ratios = ("", "", "") if prev is None else (
            f"{n / prev[0]:.1f}", f"{r['seconds'] / prev[1]:.1f}", f"{r['peak_mib'] / prev[2]:.2f}")
        print(f"{name:10} {n:>8,} {ratios[0]:>7} {r['seconds']:>9.2f} {ratios[1]:>7} {r['peak_mib']:>9.0f} "
              f"{ratios[2]:>7}" + (f" {extra[1](n, r):>9}" if extra else ""), flush=True)
        prev = (n, r["seconds"], r["peak_mib"])


def bench_duplicates(max_images: int, dim: int) -> None:
    sizes = [n for n in (2_500, 5_000, 10_000, 20_000) if n <= max_images]
    per_pair = ("ns/pair", lambda n, r: f"{r['seconds'] / (n * (n - 1) / 2) * 1e9:.2f}")
    for kind in ("identical", "distinct"):
        print_series(f"dup {kind[:5]}", sizes, lambda n: run_child(DUPLICATES_CHILD, n, dim, kind), per_pair)


def bench_classify(max_labels: int) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    import numpy as np
    from PIL import Image
    from helpers import tiny_models as tm

    sizes = [n for n in (10_000, 25_000, 50_000, 100_000, 200_000) if n <= max_labels]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = root / "clip.safetensors"
        tm.write_hf_clip(model, tm.text_model(64, 1, projection=32, seed=1),
                         tm.vision_model(64, 1, 8, 32, projection=32, seed=2))
        (root / "images").mkdir()
        rng = np.random.default_rng(0)
        for i in range(8):
            Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(root / "images" / f"{i}.png")

        def measure(n: int) -> dict:
            labels = root / "labels.txt"
            labels.write_text("\n".join(f"category {i} of kind {i % 997}" for i in range(n)), encoding="utf-8")
            return run_child(CLASSIFY_CHILD, model, labels, root / "images")

        per_label = ("ms/1K", lambda n, r: f"{r['seconds'] / n * 1e6:.1f}")
        print_series("classify", sizes, measure, per_label)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 run per size instead of 3")
    parser.add_argument("--max", type=int, default=1_000_000, help="largest prompt size (default 10^6)")
    parser.add_argument("--only", choices=("prompts", "duplicates", "classify"), help="one series (default all)")
    parser.add_argument("--max-images", type=int, default=20_000, help="largest duplicates size (default 20,000)")
    parser.add_argument("--max-labels", type=int, default=200_000, help="largest classify size (default 200,000)")
    parser.add_argument("--dim", type=int, default=768, help="embedding size for duplicates (default 768, CLIP-L)")
    args = parser.parse_args()
    if args.only in (None, "duplicates"):
        bench_duplicates(args.max_images, args.dim)
    if args.only in (None, "classify"):
        bench_classify(args.max_labels)
    if args.only not in (None, "prompts"):
        return

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
