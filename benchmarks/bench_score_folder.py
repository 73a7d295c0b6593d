"""Folder scoring speed: ``python -m clip_suite score`` vs a plain loop, in one process run.

Writes N PNGs of 1024x1024 (noise over gradients, so they compress like photos rather than flat colour) and
a random CLIP in Hugging Face ``CLIPModel`` folder layout with the geometry of openai/clip-vit-base-patch32
(the CLIP of the LAION v1 aesthetic head ``sa_0_4_vit_b_32_linear.pth``; the ViT-L/14 of the v2 head spends
~20x more time in the model, which leaves little for any loader to hide). Then, alternating after a
warm-up, it times end to end (model load included):

- **plain loop**: PIL open + the pack's own preprocessing (``image_to_tensor`` + ``preprocess_images``) +
  transformers ``CLIPModel.get_image_features``, batch by batch, one process;
- **CLI fp32**: ``score --precision fp32`` (our towers; decoding and resizing in worker processes
  overlapped with inference);
- **CLI bf16** (once): ``score --precision bf16`` (the vision tower in bf16), with its max score error
  against CLI fp32;
- **CLI fp32 without the pool** (once, ``--workers 0``: decoding in the model's process, torch's threads as
  the plain loop's), to show how much of the difference the overlapped loading makes.

    python benchmarks/bench_score_folder.py [--images 200] [--batch 8] [--rounds 2] [--workers N] [--quick]

Timings on a shared machine are noisy: compare the ratio, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from _common import setup_threads

PROMPT = "a photograph of a red fox in a snowy birch forest at dawn"
B32_VISION = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                  image_size=224, patch_size=32, hidden_act="quick_gelu", projection_dim=512)
B32_TEXT = dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8,
                hidden_act="quick_gelu", projection_dim=512, max_position_embeddings=77, vocab_size=49408,
                eos_token_id=49407, bos_token_id=49406, pad_token_id=1)


def write_images(folder: Path, n: int, size: int = 1024) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    for i in range(n):
        path = folder / f"img_{i:04d}.png"
        if path.exists():
            continue
        colour = rng.uniform(0.2, 1.0, 3).astype(np.float32)
        base = (ramp[None, :, None] * colour if i % 2 else ramp[:, None, None] * colour)
        noise = rng.normal(0, 24 + i % 5 * 8, (size, size, 3)).astype(np.float32)
        partial = path.with_suffix(".part")  # renamed when complete: an interrupted run leaves no broken PNG
        Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(partial, format="PNG")
        os.replace(partial, path)


def write_model(folder: Path) -> None:
    from transformers import CLIPConfig, CLIPModel

    if (folder / "config.json").exists():
        return
    torch.manual_seed(0)
    CLIPModel(CLIPConfig(text_config=B32_TEXT, vision_config=B32_VISION, projection_dim=512)).save_pretrained(folder)


def _features(out):
    """Projected features: transformers 5 returns an output object (projection in ``pooler_output``), 4 a tensor."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def plain_loop(model_dir: Path, paths: list[str], batch: int) -> list[float]:
    """PIL open + the pack's preprocessing + transformers CLIPModel; returns the cosines."""
    from PIL import Image
    from transformers import CLIPModel

    from clip_suite.clip_impl.images.preprocess import image_to_tensor, preprocess_images
    from clip_suite.clip_impl.tokenizer import BOS_ID, EOS_ID, get_tokenizer

    model = CLIPModel.from_pretrained(model_dir).eval()
    ids = torch.tensor([[BOS_ID, *get_tokenizer().encode(PROMPT), EOS_ID]])
    cosines = []
    with torch.inference_mode():
        text = F.normalize(_features(model.get_text_features(input_ids=ids)), dim=-1)[0]
        for start in range(0, len(paths), batch):
            images = []
            for path in paths[start : start + batch]:
                with Image.open(path) as img:
                    images.append(image_to_tensor(img))
            pixels = preprocess_images(torch.cat(images), model.config.vision_config.image_size)
            feats = _features(model.get_image_features(pixel_values=pixels))
            cosines += (F.normalize(feats, dim=-1) @ text).tolist()
    return cosines


def cli(model_dir: Path, image_dir: Path, out: Path, batch: int, precision: str, workers: int | None) -> list[float]:
    from clip_suite.cli import main

    argv = ["score", "--model", str(model_dir), "--prompt", PROMPT, "--scale", "cosine", "--batch-size", str(batch),
            "--precision", precision, "--out", str(out), str(image_dir)]
    if workers is not None:
        argv[1:1] = ["--workers", str(workers)]
    assert main(argv) == 0
    with out.open(newline="") as f:
        return [float(r["score"]) for r in csv.DictReader(f)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds of each (median)")
    parser.add_argument("--workers", type=int, default=None, help="CLI --workers (default: the CLI's)")
    parser.add_argument("--dir", help="where to keep the images and model (default: a temporary folder)")
    parser.add_argument("--quick", action="store_true", help="24 images, 1 round (a smoke run)")
    args = parser.parse_args()
    n, rounds = (24, 1) if args.quick else (args.images, args.rounds)
    threads = setup_threads()

    tmp = None if args.dir else tempfile.TemporaryDirectory()
    root = Path(args.dir or tmp.name)
    image_dir, model_dir = root / f"images_{n}", root / "clip_b32"
    image_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    write_images(image_dir, n)
    write_model(model_dir)
    print(f"{n} PNGs 1024x1024 + random ViT-B/32 CLIP ready in {time.perf_counter() - t0:.1f} s; torch threads {threads}, "
          f"{os.cpu_count()} CPUs, batch {args.batch}")
    paths = sorted(str(p) for p in image_dir.glob("*.png"))

    times = {"plain loop": [], "CLI fp32": []}
    results = {}
    for r in range(rounds):
        for name in times:
            t0 = time.perf_counter()
            if name == "plain loop":
                results[name] = plain_loop(model_dir, paths, args.batch)
            else:
                results[name] = cli(model_dir, image_dir, root / "fp32.csv", args.batch, "fp32", args.workers)
            times[name].append(time.perf_counter() - t0)
            print(f"  round {r + 1}: {name:10s} {times[name][-1]:7.1f} s ({n / times[name][-1]:.2f} images/s)", flush=True)
    t0 = time.perf_counter()
    bf16 = cli(model_dir, image_dir, root / "bf16.csv", args.batch, "bf16", args.workers)
    t_bf16 = time.perf_counter() - t0
    t0 = time.perf_counter()
    cli(model_dir, image_dir, root / "nopool.csv", args.batch, "fp32", 0)
    t_nopool = time.perf_counter() - t0

    plain, ours = statistics.median(times["plain loop"]), statistics.median(times["CLI fp32"])
    agree = max(abs(a - b) for a, b in zip(results["plain loop"], results["CLI fp32"]))
    err = max(abs(a - b) for a, b in zip(results["CLI fp32"], bf16))
    print(f"plain loop (PIL + pack preprocessing + transformers CLIPModel): {n / plain:6.2f} images/s")
    print(f"CLI fp32 (worker-pool loading):                               {n / ours:6.2f} images/s  "
          f"{plain / ours:.2f}x the plain loop (max cosine difference {agree:.1e})")
    print(f"CLI bf16 vision tower (one run):                              {n / t_bf16:6.2f} images/s  "
          f"{ours / t_bf16:.2f}x CLI fp32; max cosine error vs fp32 {err:.2e} "
          f"({100 * err:.3f} on clipscore_100)")
    print(f"CLI fp32 --workers 0 (no pool, one run):                      {n / t_nopool:6.2f} images/s  "
          f"{plain / t_nopool:.2f}x the plain loop")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
