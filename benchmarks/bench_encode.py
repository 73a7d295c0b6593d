"""Encoding speed: CLIP Suite vs transformers' towers and (with --comfyui) ComfyUI's own encoders.

    python benchmarks/bench_encode.py [--quick] [--comfyui /path/to/ComfyUI] [--device cpu|cuda]

Full-size random-weight SDXL and SD1.5 text encoders are built once into $CLIP_SUITE_CACHE (see
tests/full_size.py). Each line prints both times (medians of alternating runs after a warm-up) and the
ratio reference/ours. Our chunk cache is cleared before each timed call unless the case is about it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from _common import fmt, import_comfyui, matmul_ceiling, max_rel_diff, paired_medians, setup_threads

import full_size  # noqa: E402  (tests/ is put on sys.path by _common)
from clip_suite.clip_impl.cache import ByteLRUCache
from clip_suite.clip_impl.text.encode import EncodeSettings, encode_prompt
from clip_suite.clip_impl.weights.loading import load_clip
from clip_suite.clip_impl.tokenizer import get_tokenizer

WORDS = ("a detailed oil painting of an old lighthouse on a rocky coast at dusk, waves crashing, "
         "dramatic clouds, warm light in the windows, seagulls, long exposure, muted palette, ").split()


def prompt_of(tokens: int, weighted: bool = False) -> str:
    """A prompt of exactly ``tokens`` CLIP tokens (comfy chunking: tokens/75 full chunks)."""
    tok, words = get_tokenizer(), []
    while len(tok.encode(" ".join(words))) < tokens:
        words.append(WORDS[len(words) % len(WORDS)])
    while len(tok.encode(" ".join(words))) > tokens:
        words.pop()
    text = " ".join(words)
    assert len(tok.encode(text)) == tokens, "prompt builder missed the token count"
    if weighted:  # same tokens, two weighted groups
        text = text.replace("lighthouse", "(lighthouse:1.3)", 1).replace("seagulls", "(seagulls:0.8)", 1)
    return text


def transformers_towers(paths: dict, device):
    """transformers' CLIPTextModel(WithProjection) built from our HF-layout files, fp32."""
    from safetensors.torch import load_file
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    models = {}
    for role, (path, width, layers, act, with_proj) in paths.items():
        cfg = CLIPTextConfig(hidden_size=width, num_attention_heads=width // 64, intermediate_size=4 * width,
                             num_hidden_layers=layers, hidden_act=act, projection_dim=width, eos_token_id=49407)
        cls = CLIPTextModelWithProjection if with_proj else CLIPTextModel
        model = cls(cfg).eval()
        sd = {k: v.float() for k, v in load_file(str(path)).items()}
        if not with_proj:
            sd.pop("text_projection.weight", None)
        model.load_state_dict(sd, strict=False)
        models[role] = model.to(device)
    return models


def hf_encode(models: dict, ids: dict, layer_from_end: int):
    """Both towers batched, hidden_states[-layer_from_end], concatenated; pooled from G (projected)."""
    with torch.inference_mode():
        conds, pooled = [], None
        for role, model in models.items():
            out = model(input_ids=ids[role], output_hidden_states=True)
            conds.append(out.hidden_states[-layer_from_end])
            if role == "g":
                pooled = out.text_embeds[0:1]
        return torch.cat(conds, dim=-1).reshape(1, -1, sum(c.shape[-1] for c in conds)), pooled


def tower_flops(width: int, full_layers: int, rows: int, tokens: int = 77, eos_layers: int = 0) -> float:
    """Linear + attention FLOPs: ``full_layers`` over all tokens, ``eos_layers`` only for pooled rows."""
    per_token_layer = 24 * width * width
    attention = 4 * tokens * tokens * width
    full = full_layers * rows * (tokens * per_token_layer + attention)
    partial = eos_layers * rows * (tokens * 4 * width * width + 20 * width * width)
    return full + partial


def comfy_sdxl(comfy_sd, clip_l, clip_g):
    clip = comfy_sd.load_clip([str(clip_l), str(clip_g)], clip_type=comfy_sd.CLIPType.STABLE_DIFFUSION)  # DualCLIPLoader "sdxl"

    def encode(text):
        tokens = clip.tokenize(text)
        out = clip.encode_from_tokens_scheduled(tokens, add_dict={"width": 1024, "height": 1024})
        return out[0][0], out[0][1]["pooled_output"]

    return encode


def comfy_sd15(comfy_sd, clip_l):
    clip = comfy_sd.load_clip([str(clip_l)], clip_type=comfy_sd.CLIPType.STABLE_DIFFUSION)

    def encode(text):
        out = clip.encode_from_tokens_scheduled(clip.tokenize(text))
        return out[0][0], out[0][1]["pooled_output"]

    return encode


class EmptyRowCache(ByteLRUCache):
    """Keeps only the empty-prompt row (the constant every weighted prompt reuses), never a prompt's chunks."""

    def put(self, key, value) -> None:
        ids = key[3][0]
        if ids[1] == 49407:  # [BOS, EOS, pad...]: the empty chunk
            super().put(key, value)


def line(name: str, ours: float, ref_name: str, ref: float, extra: str = "") -> None:
    print(f"{name:<46} ours {fmt(ours)}  {ref_name} {fmt(ref)}  ratio {ref / ours:5.2f}x {extra}")


def bench_sdxl(args, device, runs):
    clip_l, clip_g = full_size.build("clip_l.safetensors"), full_size.build("clip_g.safetensors")
    model = load_clip(full_size.build("sdxl_te.safetensors"), device=device)
    hf = transformers_towers({"l": (clip_l, 768, 12, "quick_gelu", False), "g": (clip_g, 1280, 32, "gelu", True)}, device)
    comfy_sd = import_comfyui(args.comfyui)
    comfy = comfy_sdxl(comfy_sd, clip_l, clip_g) if comfy_sd else None
    text = prompt_of(225)
    chunks = 3
    settings = EncodeSettings()

    def ours():
        return encode_prompt(model, text, settings, cache=None)

    from clip_suite.clip_impl.text.chunking import chunk_prompt

    ids = {r: torch.tensor([c.ids(49407 if r == "l" else 0) for c in chunk_prompt(text)], device=device) for r in "lg"}
    fns = {"ours": ours, "transformers": lambda: hf_encode(hf, ids, 2)}
    if comfy:
        fns["comfyui"] = lambda: comfy(text)
    t = paired_medians(fns, runs)
    line("SDXL 225 tokens (3 chunks), warm", t["ours"], "transformers", t["transformers"])
    if comfy:
        ref_cond, ref_pooled = comfy(text)
        out = ours()
        diff = f"(max rel diff cond {max_rel_diff(out.cond, ref_cond):.1e}, pooled {max_rel_diff(out.pooled, ref_pooled):.1e})"
        line("SDXL 225 tokens (3 chunks), warm", t["ours"], "ComfyUI     ", t["comfyui"], diff)
    flops = tower_flops(768, 11, chunks) + tower_flops(1280, 31, chunks, eos_layers=1)
    shapes = [(77 * chunks, 1280, 5120), (77 * chunks, 5120, 1280), (77 * chunks, 1280, 3840), (77 * chunks, 1280, 1280)]
    ceiling, square = matmul_ceiling(shapes)
    rate = flops / t["ours"] / 1e9
    print(f"{'  fp32 matmul ceiling (same run)':<46} {ceiling:6.0f} GFLOP/s on the towers' GEMM shapes "
          f"({square:.0f} on 2048^3); ours {rate:6.0f} GFLOP/s = {rate / ceiling:4.0%} of it "
          f"({rate / square:.0%} of the square one; {flops / 1e9:.0f} GFLOP computed)")

    weighted = prompt_of(225, weighted=True)
    constants = EmptyRowCache()
    fns = {
        "ours": lambda: encode_prompt(model, weighted, settings, cache=None),
        "ours_steady": lambda: encode_prompt(model, weighted, settings, cache=constants),
    }
    if comfy:
        fns["comfyui"] = lambda: comfy(weighted)
        tw = paired_medians(fns, runs)
        line("SDXL 225 tokens weighted, empty row batched", tw["ours"], "ComfyUI     ", tw["comfyui"])
        line("SDXL 225 tokens weighted, empty row cached", tw["ours_steady"], "ComfyUI     ", tw["comfyui"])

    cache = ByteLRUCache()
    cold = paired_medians({"cold": ours}, runs)["cold"]
    encode_prompt(model, text, settings, cache=cache)
    t_same = paired_medians({"same": lambda: encode_prompt(model, text, settings, cache=cache)}, runs)["same"]
    line("SDXL re-encode the same prompt (chunk cache)", t_same, "cold        ", cold)
    edits = []
    for colour in ("red", "blue", "green", "gold", "white", "black", "pink", "grey", "brown")[: runs + 1]:
        edited = text.rsplit(" ", 1)[0] + " " + colour  # same chunk count, only the last chunk differs
        t0 = time.perf_counter()
        encode_prompt(model, edited, settings, cache=cache)
        edits.append(time.perf_counter() - t0)
    t_edit = statistics.median(edits[1:])
    line("SDXL edit only the last chunk (chunk cache)", t_edit, "cold        ", cold)

    bf = load_clip(full_size.build("sdxl_te.safetensors"), precision="bf16", device=device)
    tb = paired_medians({"fp32": ours, "bf16": lambda: encode_prompt(bf, text, settings, cache=None)}, runs)
    a, b = ours(), encode_prompt(bf, text, settings, cache=None)
    rel = lambda x, y: ((x.float() - y.float()).abs() / y.float().abs().max())  # noqa: E731
    print(f"{'SDXL bf16 mode':<46} bf16 {fmt(tb['bf16'])}  fp32 {fmt(tb['fp32'])}  speed-up {tb['fp32'] / tb['bf16']:5.2f}x "
          f"(cond rel err max {rel(b.cond, a.cond).max():.2e} mean {rel(b.cond, a.cond).mean():.2e}; "
          f"pooled max {rel(b.pooled, a.pooled).max():.2e} mean {rel(b.pooled, a.pooled).mean():.2e})")


def bench_sd15(args, device, runs):
    clip_l = full_size.build("clip_l.safetensors")
    model = load_clip(full_size.build("sd15_te.safetensors"), device=device)
    hf = transformers_towers({"l": (clip_l, 768, 12, "quick_gelu", False)}, device)
    comfy_sd = import_comfyui(args.comfyui)
    comfy = comfy_sd15(comfy_sd, clip_l) if comfy_sd else None
    from clip_suite.clip_impl.text.chunking import chunk_prompt

    for tokens in (60, 225):
        text = prompt_of(tokens)
        ids = torch.tensor([c.ids() for c in chunk_prompt(text)], device=device)

        def hf_run():
            with torch.inference_mode():
                return hf["l"](input_ids=ids).last_hidden_state

        fns = {"ours": lambda: encode_prompt(model, text, EncodeSettings(), cache=None), "transformers": hf_run}
        if comfy:
            fns["comfyui"] = lambda: comfy(text)
        t = paired_medians(fns, runs)
        name = f"SD1.5 {tokens} tokens, warm"
        line(name, t["ours"], "transformers", t["transformers"])
        if comfy:
            line(name, t["ours"], "ComfyUI     ", t["comfyui"])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer runs")
    p.add_argument("--comfyui", help="ComfyUI checkout to compare with (default: $COMFYUI_PATH)",
                   default=os.environ.get("COMFYUI_PATH"))
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    threads = setup_threads() if args.device == "cpu" else 0
    runs = 3 if args.quick else 7
    print(f"torch {torch.__version__}, device {args.device}, threads {threads or '-'}, {runs} runs per case")
    bench_sdxl(args, torch.device(args.device), runs)
    bench_sd15(args, torch.device(args.device), runs)


if __name__ == "__main__":
    main()
