"""Image embeddings per second: our ViT-L/14 vision tower vs transformers' CLIPModel, in one process.

Both run the same random ViT-L/14 weights (converted by our loader's key mapping), fp32, on the same
preprocessed pixels and batch, alternating ours/theirs after a warm-up; medians are printed with the ratio.
transformers' CLIPModel gets a one-layer text tower: only ``get_image_features`` runs, so its size does not
matter, and building it small saves start-up time.

    python benchmarks/bench_vision.py [--quick] [--batch N] [--reps N]

Run from the repository root with the package installed (``pip install -e .``). Timings on a
shared machine are noisy: compare the ratio, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def build_models():
    from transformers import CLIPConfig, CLIPModel

    from clip_suite.clip_impl.weights.vision import VisionSource, to_vision_state_dict
    from clip_suite.clip_impl.towers.vision import VIT_L_14, VisionTower

    torch.manual_seed(0)
    vision = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                  image_size=224, patch_size=14, hidden_act="quick_gelu", projection_dim=768)
    text = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=1, num_attention_heads=12, projection_dim=768)
    theirs = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=768)).eval()
    sd = {k: v for k, v in theirs.state_dict().items() if k.startswith(("vision_model.", "visual_projection."))}
    src = VisionSource("hf", "", 1024, 24, 4096, 14, 224, 768)
    with torch.device("meta"):
        ours = VisionTower(VIT_L_14)
    ours.load_state_dict(to_vision_state_dict(src, sd), strict=True, assign=True)
    return ours.eval().requires_grad_(False), theirs


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 2, 2 timed rounds (a smoke run)")
    parser.add_argument("--batch", type=int, default=None, help="images per forward pass (default 8; quick 2)")
    parser.add_argument("--reps", type=int, default=None, help="timed rounds per model (default 5; quick 2)")
    args = parser.parse_args()
    batch = args.batch or (2 if args.quick else 8)
    reps = args.reps or (2 if args.quick else 5)

    from clip_suite.clip_impl.images.preprocess import preprocess_images

    t0 = time.perf_counter()
    ours, theirs = build_models()
    print(f"built ViT-L/14 (random weights, fp32) in {time.perf_counter() - t0:.1f} s; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {batch}, {reps} rounds")
    images = torch.rand(batch, 256, 320, 3, generator=torch.Generator().manual_seed(1))
    pixels = preprocess_images(images, 224)

    def run_ours():
        return ours(pixels)

    def run_theirs():
        return theirs.get_image_features(pixel_values=pixels).pooler_output

    with torch.inference_mode():
        diff = (run_ours() - run_theirs()).abs().max().item()  # also the warm-up
        times = {"ours": [], "transformers": []}
        for _ in range(reps):
            times["ours"].append(timed(run_ours))
            times["transformers"].append(timed(run_theirs))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"max |ours - transformers| on the image embeddings: {diff:.2e}")
    for name, m in med.items():
        print(f"{name:>13}: {batch / m:7.2f} images/s (median {m * 1000:.0f} ms per batch of {batch})")
    print(f"ratio ours/transformers (throughput): {med['transformers'] / med['ours']:.2f}x")


if __name__ == "__main__":
    main()
