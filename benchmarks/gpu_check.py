"""One prepared GPU check (issue 13): our encoders against ComfyUI's on CUDA, memory, time, scoring speed.

    python benchmarks/gpu_check.py --comfyui /path/to/ComfyUI          # on a CUDA machine, < 5 minutes
    python benchmarks/gpu_check.py --comfyui /path/to/ComfyUI --smoke  # tiny random models, any machine

Full mode builds the full-size random text encoders of tests/full_size.py (fp16, as ComfyUI keeps them)
and a random ViT-L/14 CLIP for scoring; ``--smoke`` uses tiny random models of the same layouts (to check
that this script works, on the CPU when there is no GPU: the CUDA-only rows then say so). One table:

- parity: max |ours - ref| / max |ref| of cond and pooled, ComfyUI's CLIP (CLIPSetLastLayer + CLIPTextEncode,
  as the node runs it) vs ours fed with that CLIP ("native") and vs our loader on the same files
  ("loader"), SD1.5 and SDXL, clip_skip 0, 1 and -1 (SDXL), a 225-token weighted prompt;
- peak VRAM of one encode (``torch.cuda.max_memory_allocated`` above the models' own weights), ours vs
  ComfyUI's; median warm encode time, ours (chunk cache cleared, so every chunk is computed) vs ComfyUI's;
- scoring: images per second of our Image-Text Similarity maths vs transformers' ``CLIPModel``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

PROMPT = ("a (red:1.2) fox in a snowy forest, oil painting, (soft light:0.8), highly detailed, by a famous painter, "
          "trending on an art site, warm colours, wide angle, depth of field, golden hour, ") * 5  # ~225 tokens
SD1_OPTIONS = dict(chunking="comfy", comma_backtrack=20, weighting="comfy", pooled="first_chunk", empty_prompt="encode")
SDXL_SIZES = dict(width=1024, height=1024, crop_w=0, crop_h=0, target_width=1024, target_height=1024)


def import_comfyui(path: str, device_is_cpu: bool):
    sys.path.insert(0, str(Path(path).resolve()))
    import comfy.cli_args

    comfy.cli_args.args.cpu = device_is_cpu
    import comfy.model_management
    import comfy.sd
    import folder_paths  # noqa: F401  (our pack uses its ComfyUI host once ComfyUI has loaded)

    return comfy


def tiny_files(folder: Path) -> dict[str, list[str]]:
    """Tiny random clip_l / clip_g files (HF layout, fp16) and a tiny full CLIP."""
    import tiny_models as tm

    # Square projections: ComfyUI's text models have a (width, width) text_projection.
    l_model = tm.text_model(tm.L_WIDTH, 4, "quick_gelu", tm.L_WIDTH, 1)
    g_model = tm.text_model(tm.G_WIDTH, 5, "gelu", tm.G_WIDTH, 2)
    tm.save(folder / "clip_l.safetensors", tm.hf_state(l_model))
    tm.save(folder / "clip_g.safetensors", tm.hf_state(g_model))
    return {"sd1": [str(folder / "clip_l.safetensors")],
            "sdxl": [str(folder / "clip_l.safetensors"), str(folder / "clip_g.safetensors")]}


def full_files() -> dict[str, list[str]]:
    import full_size

    l_path, g_path = str(full_size.build("clip_l.safetensors")), str(full_size.build("clip_g.safetensors"))
    return {"sd1": [l_path], "sdxl": [l_path, g_path]}


def comfy_clip(comfy, paths: list[str], smoke: bool):
    """ComfyUI's CLIP for the files (CLIPLoader / DualCLIPLoader); tiny models get their shapes passed in."""
    if not smoke:
        return comfy.sd.load_clip(paths, clip_type=comfy.sd.CLIPType.STABLE_DIFFUSION)
    import comfy.sd1_clip
    import comfy.sdxl_clip
    from safetensors.torch import load_file

    import tiny_models as tm

    def config(width, layers, act):
        return {"hidden_size": width, "num_hidden_layers": layers, "num_attention_heads": width // 64,
                "intermediate_size": 4 * width, "hidden_act": act}

    sdxl = len(paths) == 2
    target = type("Target", (), {})()
    target.params = {}
    target.clip = comfy.sdxl_clip.SDXLClipModel if sdxl else comfy.sd1_clip.SD1ClipModel
    target.tokenizer = comfy.sdxl_clip.SDXLTokenizer if sdxl else comfy.sd1_clip.SD1Tokenizer
    options = {"clip_l_model_config": config(tm.L_WIDTH, 4, "quick_gelu"),
               "clip_g_model_config": config(tm.G_WIDTH, 5, "gelu")}
    clip = comfy.sd.CLIP(target, model_options=options)
    state = {}
    for child, path in zip(("clip_l", "clip_g"), paths):
        state.update({f"{child}.transformer.{k}": v for k, v in load_file(path).items()})
    clip.load_sd(state, full_model=True)
    return clip


def rel(a, b) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().abs().max())


def timed(fn, runs: int) -> float:
    fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def peak_vram(fn, comfy) -> str:
    if not torch.cuda.is_available():
        return "no CUDA: skipped"
    comfy.model_management.unload_all_models()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    return f"{(torch.cuda.max_memory_allocated() - base) / 2**20:.0f} MiB"


def family_rows(comfy, family: str, paths: list[str], smoke: bool, runs: int) -> list[tuple]:
    from clip_suite.clip_impl.cache import CHUNK_CACHE
    from clip_suite.clip_impl.clip_skip import FAMILIES, to_set_last_layer
    from clip_suite.nodes import host
    from clip_suite.nodes.text_encode import ClipSuiteTextEncode, ClipSuiteTextEncodeSDXL

    clip = comfy_clip(comfy, paths, smoke)
    ours_loader = host.get_host().load(paths, device="auto")
    fam = FAMILIES[family]

    def ours(c, skip):
        CHUNK_CACHE.clear()
        if family == "sdxl":
            node = ClipSuiteTextEncodeSDXL()
            return node.encode(c, PROMPT, "", skip, "both", **SD1_OPTIONS, **SDXL_SIZES)["result"][0]
        return ClipSuiteTextEncode().encode(c, PROMPT, skip, **SD1_OPTIONS)["result"][0]

    def native(skip):
        c = clip.clone()
        c.clip_layer(to_set_last_layer(fam, skip))
        return c.encode_from_tokens_scheduled(c.tokenize(PROMPT))

    rows = []
    for skip in (0, 1, -1) if family == "sdxl" else (0, 1):
        (c_ref, d_ref), = native(skip)
        for name, source in (("native", clip), ("loader", ours_loader)):
            (c, d), = ours(source, skip)
            rows.append((f"{family} parity, clip_skip {skip}, {name}",
                         f"{max(rel(c, c_ref), rel(d['pooled_output'], d_ref['pooled_output'])):.2e}", "<= 1e-5"))
    rows.append((f"{family} peak VRAM of an encode, ComfyUI", peak_vram(lambda: native(0), comfy), ""))
    rows.append((f"{family} peak VRAM of an encode, ours native", peak_vram(lambda: ours(clip, 0), comfy), ""))
    rows.append((f"{family} peak VRAM of an encode, ours loader", peak_vram(lambda: ours(ours_loader, 0), comfy), ""))
    t_ref = timed(lambda: native(0), runs)
    t_native, t_loader = timed(lambda: ours(clip, 0), runs), timed(lambda: ours(ours_loader, 0), runs)
    rows.append((f"{family} encode ms: ComfyUI / ours native / ours loader",
                 f"{t_ref * 1e3:.1f} / {t_native * 1e3:.1f} / {t_loader * 1e3:.1f}", "ours <= ComfyUI"))
    comfy.model_management.unload_all_models()
    return rows


def scoring_rows(device: torch.device, smoke: bool, runs: int) -> list[tuple]:
    """Images/s of our scoring maths vs transformers' CLIPModel on a random CLIP (ViT-L/14, or tiny)."""
    from safetensors.torch import save_file
    from transformers import CLIPConfig, CLIPModel

    from clip_suite.clip_impl.weights.loading import load_clip
    from clip_suite.clip_impl.scoring.similarity import score_images

    if smoke:
        text = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=1, intermediate_size=256)
        vision = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=1, intermediate_size=256,
                      image_size=32, patch_size=8)
        cfg, batch = CLIPConfig(text_config=text, vision_config=vision, projection_dim=32), 8
    else:
        cfg = CLIPConfig(text_config=dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                          intermediate_size=3072),
                         vision_config=dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                                            intermediate_size=4096, image_size=224, patch_size=14),
                         projection_dim=768)
        batch = 32
    torch.manual_seed(0)
    ref = CLIPModel(cfg).eval()
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "clip.safetensors"
        save_file({k: v.half().contiguous() for k, v in ref.state_dict().items()}, str(path))
        ours = load_clip(path, device=device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    ref = ref.to(device=device, dtype=dtype)
    images = torch.rand(batch, cfg.vision_config.image_size, cfg.vision_config.image_size, 3)
    pixels = torch.rand(batch, 3, cfg.vision_config.image_size, cfg.vision_config.image_size, device=device, dtype=dtype)
    ids = torch.randint(0, 49000, (1, 77), device=device)

    def theirs():
        with torch.inference_mode():
            img = ref.get_image_features(pixel_values=pixels)
            txt = ref.get_text_features(input_ids=ids)
            # transformers 5 returns an output object (the projected features as its pooler_output)
            img, txt = (getattr(t, "pooler_output", t) for t in (img, txt))
            return torch.nn.functional.cosine_similarity(img, txt)

    t_ours = timed(lambda: score_images(ours, images, "a photo of a fox"), runs)
    t_ref = timed(theirs, runs)
    label = "scoring images/s: ours (from IMAGE, resize incl.) / transformers (pixels)"
    return [(label, f"{batch / t_ours:.1f} / {batch / t_ref:.1f}", "ours >= transformers")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--comfyui", default=os.environ.get("COMFYUI_PATH"), help="a ComfyUI checkout")
    parser.add_argument("--smoke", action="store_true", help="tiny random models (checks the script itself)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per measurement (median)")
    args = parser.parse_args()
    if not args.comfyui:
        parser.error("--comfyui (or $COMFYUI_PATH) is required")
    global torch
    import torch

    cuda = torch.cuda.is_available()
    if not cuda:
        print("no CUDA device here: running on the CPU; the VRAM rows are skipped"
              + ("" if args.smoke else " (use --smoke for a quick check of the script)"))
    comfy = import_comfyui(args.comfyui, device_is_cpu=not cuda)
    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        files = tiny_files(Path(d)) if args.smoke else full_files()
        for family in ("sd1", "sdxl"):
            rows += family_rows(comfy, family, files[family], args.smoke, args.runs)
    device = comfy.model_management.get_torch_device()
    rows += scoring_rows(device, args.smoke, args.runs)
    width = max(len(r[0]) for r in rows)
    print(f"\nCLIP Suite GPU check ({'smoke, tiny models' if args.smoke else 'full-size random models'}; "
          f"device {device}; torch {torch.__version__}; {time.perf_counter() - started:.0f} s)")
    print(f"{'measure':{width}}  {'value':>24}  target")
    for name, value, target in rows:
        print(f"{name:{width}}  {value:>24}  {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
