"""``search`` on a folder of generated images: the first search (embeds every image) vs a second search
of the same folder with another query (embeddings read from the index), as whole command runs.

A random-weight CLIP of real shape (ViT-B/32 by default: 512-wide text tower, 768-wide ViT, 224 px) is
written as a full CLIP file (HF layout, fp16); N images (512x512 PNGs, like SD1.5 outputs) are generated.
Each search runs ``python -m clip_suite search`` in a fresh process. Two figures per run:

- "in-process": time inside the process, from the start of ``cli.main`` to its end (model loading,
  index, query, ranking), i.e. without interpreter start and imports;
- "whole CLI": the process's wall time, start-up included.

The first search of each round uses a fresh cache directory; medians over rounds, then the ratios.

    python benchmarks/bench_search.py [--images 300] [--rounds 1] [--arch b32|l14] [--keep DIR]

Run from the repository root with the package importable as ``clip_suite``. Timings on a shared
machine are noisy: compare the ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ARCHS = {  # text width, text layers, vision width, vision layers, heads, patch, projection
    "b32": (512, 12, 768, 12, 12, 32, 512),
    "l14": (768, 12, 1024, 24, 16, 14, 768),
}
# Runs cli.main inside the child and prints its duration: start-up and imports are excluded.
CHILD = (
    "import sys, time\n"
    "from clip_suite.cli import main\n"
    "t = time.perf_counter()\n"
    "code = main(sys.argv[1:])\n"
    "print(f'__main_seconds {time.perf_counter() - t:.6f}', file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def write_model(path: Path, arch: str) -> None:
    """A random full CLIP of the arch's real shape, HF CLIPModel layout, fp16."""
    import torch
    from safetensors.torch import save_file
    from transformers import CLIPConfig, CLIPModel

    tw, tl, vw, vl, vh, patch, proj = ARCHS[arch]
    torch.manual_seed(0)
    cfg = CLIPConfig(
        text_config=dict(hidden_size=tw, intermediate_size=4 * tw, num_hidden_layers=tl, num_attention_heads=tw // 64,
                         hidden_act="quick_gelu"),
        vision_config=dict(hidden_size=vw, intermediate_size=4 * vw, num_hidden_layers=vl, num_attention_heads=vh,
                           image_size=224, patch_size=patch, hidden_act="quick_gelu"),
        projection_dim=proj,
    )
    with torch.device("meta"):
        model = CLIPModel(cfg)
    sd = {}
    g = torch.Generator().manual_seed(0)
    for name, p in model.state_dict().items():
        if name.endswith("position_ids"):
            continue
        if "norm" in name and name.endswith("weight"):
            t = 1 + 0.1 * torch.randn(p.shape, generator=g)
        elif name == "logit_scale":
            t = torch.tensor(4.6052)
        else:
            t = 0.02 * torch.randn(p.shape, generator=g)
        sd[name] = t.half().contiguous()
    save_file(sd, str(path))


def write_images(folder: Path, n: int, size: int = 512) -> None:
    """``n`` PNGs with structure at several scales (random colour grid, bicubic, plus noise)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        coarse = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((size, size), Image.BICUBIC)
        arr = np.asarray(coarse, dtype=np.int16) + rng.integers(-12, 13, (size, size, 3), dtype=np.int16)
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(folder / f"{i:05d}.png")


def run_search(model: Path, folder: Path, cache: Path, query: str) -> tuple[float, float, str]:
    """(in-process seconds, whole-process seconds, the index summary line) of one search."""
    env = dict(os.environ, XDG_CACHE_HOME=str(cache))
    cmd = [sys.executable, "-c", CHILD, "search", "--model", str(model), "--text", query, "--top", "5", str(folder)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"search failed ({proc.returncode}):\n{proc.stderr}")
    lines = proc.stderr.strip().splitlines()
    inside = float(next(line.split()[1] for line in lines if line.startswith("__main_seconds")))
    summary = next(line for line in lines if line.startswith("index:"))
    return inside, wall, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=1, help="first+second search pairs (medians are printed)")
    parser.add_argument("--arch", choices=sorted(ARCHS), default="b32")
    parser.add_argument("--keep", metavar="DIR", help="build the model and images here and keep them")
    args = parser.parse_args()

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_search_"))
    work.mkdir(parents=True, exist_ok=True)
    model, folder = work / f"clip_{args.arch}.safetensors", work / f"images_{args.images}"
    if not model.exists():
        write_model(model, args.arch)
    if not folder.exists() or len(list(folder.glob("*.png"))) != args.images:
        write_images(folder, args.images)
    print(f"model: random {args.arch} full CLIP ({model.stat().st_size / 1e6:.0f} MB fp16); {args.images} images "
          f"512x512 PNG; {os.cpu_count()} CPUs")
    first, second = {"in": [], "wall": []}, {"in": [], "wall": []}
    for r in range(args.rounds):
        cache = Path(tempfile.mkdtemp(prefix="cache_", dir=work))
        a_in, a_wall, a_sum = run_search(model, folder, cache, "a red umbrella in the rain")
        b_in, b_wall, b_sum = run_search(model, folder, cache, "a portrait of an old man")
        print(f"round {r + 1}: first  {a_in:7.2f} s in-process, {a_wall:7.2f} s whole CLI  ({a_sum})")
        print(f"round {r + 1}: second {b_in:7.2f} s in-process, {b_wall:7.2f} s whole CLI  ({b_sum})")
        first["in"].append(a_in), first["wall"].append(a_wall)
        second["in"].append(b_in), second["wall"].append(b_wall)
    med = {k: statistics.median(v) for k, v in first.items()}, {k: statistics.median(v) for k, v in second.items()}
    print(f"second search vs first, in-process (start-up excluded): {med[0]['in'] / med[1]['in']:.1f}x faster")
    print(f"second search vs first, whole CLI runs:                 {med[0]['wall'] / med[1]['wall']:.1f}x faster")


if __name__ == "__main__":
    main()
