"""Loading SDXL's text encoders: time and peak RSS, ours vs ComfyUI's loaders.

    python benchmarks/bench_load.py --comfyui /path/to/ComfyUI [--quick]

Cases, each in a fresh subprocess (so peak RSS is the loader's own), alternating, medians:
- ours on a full SDXL checkpoint (reads only the text-encoder keys) vs ComfyUI's CheckpointLoaderSimple
  (``comfy.sd.load_checkpoint_guess_config``: UNet, VAE and text encoders);
- ours on the standalone clip_l + clip_g pair vs ComfyUI's DualCLIPLoader (``comfy.sd.load_clip``), and
  for this pair also what follows a load: the first encode of a one-chunk prompt (ours copies the mapped
  block matrices to fp32 before it, ComfyUI casts fp16 per layer in every pass) and a second encode.
The full checkpoint (6.9 GB fp16: zero-filled UNet and VAE in ComfyUI's own key layout, the random text
encoders of tests/full_size.py) is built once into $CLIP_SUITE_CACHE with ComfyUI's model classes on the
meta device to get the UNet/VAE key names and shapes. Files are read from the page cache (warm).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import full_size  # noqa: E402

_CHILD = r"""
import json, sys, time
sys.path.insert(0, {comfy!r})
import torch
torch.set_num_threads({threads})
case, paths, encode = {case!r}, {paths!r}, {encode!r}
text = "a photo of a cat, highly detailed, masterpiece, (sharp focus:1.2), golden hour"
if case.startswith("comfy"):
    import comfy.cli_args
    comfy.cli_args.args.cpu = True
    import comfy.sd
t0 = time.perf_counter()
if case == "ours":
    from clip_suite.clip_impl.weights.loading import load_clip
    model = load_clip(paths, with_vision=False)
elif case == "comfy_checkpoint":
    out = comfy.sd.load_checkpoint_guess_config(paths[0], output_vae=True, output_clip=True)
elif case == "comfy_dual_clip":
    clip = comfy.sd.load_clip(paths, clip_type=comfy.sd.CLIPType.STABLE_DIFFUSION)
seconds = time.perf_counter() - t0
sys.path.append({bench!r})  # last, and after ComfyUI's imports: nothing of it is shadowed
from _common import peak_rss_mib
result = {{"seconds": seconds, "peak_rss_mib": peak_rss_mib()}}
if encode and case == "ours":
    from clip_suite.clip_impl.text.encode import EncodeSettings, encode_prompt
    run = lambda s: encode_prompt(model, s, EncodeSettings(), cache=None)
elif encode:
    run = lambda s: clip.encode_from_tokens_scheduled(clip.tokenize(s))
for key, prompt in (("first_encode", text), ("second_encode", text + ", again")) if encode else ():
    t0 = time.perf_counter()
    run(prompt)
    result[key] = time.perf_counter() - t0
print(json.dumps(result))
"""


def run_child(case: str, paths: list[str], comfy: str, encode: bool = False) -> dict:
    code = _CHILD.format(comfy=comfy, bench=str(HERE), threads=os.cpu_count() or 1, case=case, paths=paths, encode=encode)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(f"{case} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def build_full_sdxl(comfy: str) -> Path:
    """A full SDXL base checkpoint: our random text encoders + zero UNet/VAE in ComfyUI's key layout."""
    path = full_size.cache_dir() / "sdxl_full.safetensors"
    if path.exists():
        return path
    sys.path.insert(0, comfy)
    import comfy.cli_args

    comfy.cli_args.args.cpu = True
    import torch
    from comfy.ldm.models.autoencoder import AutoencoderKL
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
    from safetensors import safe_open
    from safetensors.torch import save_file

    import comfy.ops

    unet_cfg = dict(  # SDXL base, as ComfyUI's model detection derives it
        image_size=32, in_channels=4, out_channels=4, model_channels=320, num_res_blocks=[2, 2, 2],
        channel_mult=[1, 2, 4], transformer_depth=[0, 0, 2, 2, 10, 10], transformer_depth_middle=10,
        transformer_depth_output=[0, 0, 0, 2, 2, 2, 10, 10, 10], context_dim=2048, num_head_channels=64,
        use_linear_in_transformer=True, adm_in_channels=2816, num_classes="sequential", use_spatial_transformer=True,
        legacy=False, use_temporal_attention=False, use_temporal_resblock=False,
    )
    ddconfig = dict(double_z=True, z_channels=4, resolution=256, in_channels=3, out_ch=3, ch=128,
                    ch_mult=[1, 2, 4, 4], num_res_blocks=2, attn_resolutions=[], dropout=0.0)
    with torch.device("meta"):
        unet = UNetModel(**unet_cfg, dtype=torch.float16, device="meta", operations=comfy.ops.disable_weight_init)
        vae = AutoencoderKL(ddconfig=ddconfig, embed_dim=4)
    tensors = {f"model.diffusion_model.{k}": torch.zeros(v.shape, dtype=torch.float16) for k, v in unet.state_dict().items()}
    tensors.update({f"first_stage_model.{k}": torch.zeros(v.shape, dtype=torch.float16) for k, v in vae.state_dict().items()})
    with safe_open(str(full_size.build("sdxl_te.safetensors")), "pt") as f:
        tensors.update({k: f.get_tensor(k) for k in f.keys()})
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file(tensors, str(tmp))
    os.replace(tmp, path)
    return path


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--comfyui", default=os.environ.get("COMFYUI_PATH"), required=not os.environ.get("COMFYUI_PATH"))
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    runs = 2 if args.quick else 4
    full = str(build_full_sdxl(args.comfyui))
    pair = [str(full_size.build("clip_l.safetensors")), str(full_size.build("clip_g.safetensors"))]
    print(f"full checkpoint {os.path.getsize(full) / 2**30:.1f} GiB; {runs} runs per case, warm page cache")
    for name, ours_paths, ref_case, ref_paths, encode in (
        ("SDXL text encoders from a full checkpoint", [full], "comfy_checkpoint", [full], False),
        ("SDXL clip_l + clip_g standalone files", pair, "comfy_dual_clip", pair, True),
    ):
        results = {"ours": [], "ref": []}
        run_child("ours", ours_paths, args.comfyui)  # warm the page cache
        for _ in range(runs):
            results["ours"].append(run_child("ours", ours_paths, args.comfyui, encode))
            results["ref"].append(run_child(ref_case, ref_paths, args.comfyui, encode))
        keys = ("seconds", "peak_rss_mib") + (("first_encode", "second_encode") if encode else ())
        med = {k: {m: statistics.median(r[m] for r in v) for m in keys} for k, v in results.items()}
        print(f"{name:<44} ours {med['ours']['seconds']:6.2f} s, peak RSS {med['ours']['peak_rss_mib']:6.0f} MiB | "
              f"{ref_case} {med['ref']['seconds']:6.2f} s, {med['ref']['peak_rss_mib']:6.0f} MiB | "
              f"time ratio {med['ref']['seconds'] / med['ours']['seconds']:4.2f}x")
        if encode:
            both = {k: statistics.median(r["seconds"] + r["first_encode"] for r in v) for k, v in results.items()}
            print(f"{'  then load + first encode (1 chunk)':<44} ours {both['ours']:6.2f} s | {ref_case} "
                  f"{both['ref']:6.2f} s | time ratio {both['ref'] / both['ours']:4.2f}x")
            second = {k: med[k]["second_encode"] for k in med}
            print(f"{'  then a second encode':<44} ours {second['ours']:6.2f} s | {ref_case} "
                  f"{second['ref']:6.2f} s | time ratio {second['ref'] / second['ours']:4.2f}x")


if __name__ == "__main__":
    main()
