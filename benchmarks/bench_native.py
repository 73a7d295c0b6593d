"""ComfyUI's own SDXL CLIP fed to our encoder vs to CLIPTextEncode, on the CPU: memory, time, numbers.

    python benchmarks/bench_native.py --comfyui /path/to/ComfyUI [--runs 7]

The CLIP comes from ComfyUI's DualCLIPLoader path (``comfy.sd.load_clip`` on the full-size random
clip_l + clip_g of tests/full_size.py, fp16 as ComfyUI keeps them). Three fresh processes:

1. CLIPTextEncode (``clip.encode_from_tokens_scheduled(clip.tokenize(text))``, what the node runs): peak RSS;
2. ClipSuiteTextEncodeSDXL on the same kind of CLIP: peak RSS;
3. both on one CLIP, alternating: median warm time of a 225-token weighted prompt, and the largest
   relative difference of cond and pooled. Our chunk cache is cleared before each of our encodes, so
   every chunk is computed (a repeated prompt would otherwise be served from the cache; that time is
   printed too).

Targets (issue 13): peak RSS ratio <= 1.15, time ratio <= 1.0, max relative difference <= 1e-5.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import full_size  # noqa: E402

WORDS = ("a (red:1.2) fox in a snowy forest, oil painting, (soft light:0.8), highly detailed, by a famous "
         "painter, trending on an art site, warm colours, wide angle, depth of field, golden hour")

_CHILD = r"""
import json, statistics, sys, time
sys.path.insert(0, {comfy!r})
import torch
torch.set_num_threads({threads})
import comfy.cli_args
comfy.cli_args.args.cpu = True
import comfy.sd, comfy.model_management
import folder_paths  # noqa: F401  (our pack picks its ComfyUI host when ComfyUI has loaded)
case, paths, text, runs = {case!r}, {paths!r}, {text!r}, {runs!r}
clip = comfy.sd.load_clip(paths, clip_type=comfy.sd.CLIPType.STABLE_DIFFUSION)
from clip_suite.clip_impl.cache import CHUNK_CACHE
from clip_suite.clip_impl.tokenizer import get_tokenizer
from clip_suite.nodes.text_encode import ClipSuiteTextEncodeSDXL
OPTIONS = dict(clip_skip=0, clip_skip_applies_to="both", chunking="comfy", comma_backtrack=20, weighting="comfy",
               pooled="first_chunk", empty_prompt="encode", width=1024, height=1024, crop_w=0, crop_h=0,
               target_width=1024, target_height=1024)

def native():
    return clip.encode_from_tokens_scheduled(clip.tokenize(text))

def ours(cached=False):
    if not cached:
        CHUNK_CACHE.clear()
    return ClipSuiteTextEncodeSDXL().encode(clip, text, "", **OPTIONS)["result"][0]

out = {{"tokens": len(get_tokenizer().encode(text))}}
with torch.inference_mode():
    if case == "rss_comfy":
        for _ in range(3):
            native()
    elif case == "rss_ours":
        for _ in range(3):
            ours()
    else:
        fns = {{"comfy": native, "ours": ours, "ours_cached": lambda: ours(cached=True)}}
        for fn in fns.values():
            fn()
        times = {{k: [] for k in fns}}
        for _ in range(runs):
            for k, fn in fns.items():
                t0 = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t0)
        out.update({{k: statistics.median(v) for k, v in times.items()}})
        (c_ref, d_ref), = native()
        (c_our, d_our), = ours()
        rel = lambda a, b: float((a - b).abs().max() / b.abs().max())
        out["rel_cond"] = rel(c_our, c_ref)
        out["rel_pooled"] = rel(d_our["pooled_output"], d_ref["pooled_output"])
sys.path.append({bench!r})  # last, and after ComfyUI's imports: nothing of it is shadowed
from _common import peak_rss_mib
out["peak_rss_mib"] = peak_rss_mib()
print(json.dumps(out))
"""


def run_child(case: str, comfy: str, paths: list[str], text: str, runs: int) -> dict:
    code = _CHILD.format(comfy=comfy, bench=str(HERE), threads=os.cpu_count() or 1, case=case, paths=paths, text=text, runs=runs)
    env = dict(os.environ)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1800, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"{case} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def prompt_of(tokens_wanted: int) -> str:
    """WORDS repeated to at most ``tokens_wanted`` CLIP tokens (weights and brackets included)."""
    from clip_suite.clip_impl.tokenizer import get_tokenizer

    tok = get_tokenizer()
    words = WORDS.split(" ")
    out: list[str] = []
    while True:
        longer = out + [words[len(out) % len(words)]]
        if len(tok.encode(" ".join(longer))) > tokens_wanted:
            return " ".join(out)
        out = longer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--comfyui", default=os.environ.get("COMFYUI_PATH"), help="a ComfyUI checkout")
    parser.add_argument("--runs", type=int, default=7, help="timed encodes per side (median)")
    args = parser.parse_args()
    if not args.comfyui:
        parser.error("--comfyui (or $COMFYUI_PATH) is required")
    paths = [str(full_size.build("clip_l.safetensors")), str(full_size.build("clip_g.safetensors"))]
    text = prompt_of(225)
    rss_comfy = run_child("rss_comfy", args.comfyui, paths, text, args.runs)
    rss_ours = run_child("rss_ours", args.comfyui, paths, text, args.runs)
    timing = run_child("compare", args.comfyui, paths, text, args.runs)
    rss_ratio = rss_ours["peak_rss_mib"] / rss_comfy["peak_rss_mib"]
    time_ratio = timing["ours"] / timing["comfy"]
    rel = max(timing["rel_cond"], timing["rel_pooled"])
    print(f"SDXL (DualCLIPLoader, full-size random clip_l + clip_g, fp16) on the CPU, {os.cpu_count()} threads; "
          f"prompt {timing['tokens']} tokens, {args.runs} timed runs")
    print(f"{'':34} {'CLIPTextEncode':>16} {'ours (SDXL node)':>18} {'ratio':>8} {'target':>8}")
    print(f"{'peak RSS, fresh process (MiB)':34} {rss_comfy['peak_rss_mib']:16.0f} {rss_ours['peak_rss_mib']:18.0f} "
          f"{rss_ratio:8.3f} {'<= 1.15':>8}")
    print(f"{'warm encode, median (ms)':34} {timing['comfy'] * 1000:16.1f} {timing['ours'] * 1000:18.1f} "
          f"{time_ratio:8.3f} {'<= 1.00':>8}")
    print(f"{'  same prompt again, cache on (ms)':34} {'':16} {timing['ours_cached'] * 1000:18.1f}")
    print(f"{'max |ours-ref|/max|ref| (cond, pooled)':34} {timing['rel_cond']:.2e}, {timing['rel_pooled']:.2e}"
          f"{'':>14} {'<= 1e-5':>8}")
    ok = rss_ratio <= 1.15 and time_ratio <= 1.0 and rel <= 1e-5
    print("all targets met" if ok else "a target is missed (see the ratios above)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
