"""Our CLI's conditioning against ComfyUI's own encoders on full-size random-weight SD1.5, SD2.x, SDXL
and SDXL-refiner text encoders.

Native side (in this process): ``comfy.sd.load_clip`` as ``CLIPLoader`` (SD1.5: clip_l, type
stable_diffusion) and ``DualCLIPLoader`` (SDXL: clip_l + clip_g, type sdxl) call it (SD2.x: a standalone OpenCLIP-H file, which
ComfyUI builds as ``SD2ClipModel``; the refiner: clip_g alone, built as ``SDXLRefinerClipModel``); ``CLIPSetLastLayer``
is ``clip.clone()`` + ``clip_layer(n)``; ``CLIPTextEncode`` is ``tokenize`` + ``encode_from_tokens``
with the pooled output; ``CLIPTextEncodeSDXL`` tokenizes text_g and text_l separately and pads the
shorter with empty-prompt chunks. ComfyUI has no BREAK: its user encodes each part and joins them with
``ConditioningConcat`` (token axis; the first part's pooled output is kept).

Our side: ``python -m clip_suite encode`` in a subprocess, on the SD1.5/SDXL checkpoint layouts and on the
standalone files ComfyUI loads (the same random weights), comfy chunking and weighting, precision auto.

clip_skip k is CLIPSetLastLayer -(k+1) on SD1.x and -(k+2) on SD2.x and SDXL, whose native layer is the
penultimate (k = 0: no CLIPSetLastLayer node).
Pass: shapes equal and max|ours - ComfyUI| <= 1e-5 * max|ComfyUI| for cond and pooled (DESIGN 5).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

import pytest
import torch
from safetensors import safe_open

from clip_suite.clip_impl.text.chunking import chunk_prompt, describe_chunks

TOLERANCE = 1e-5

SHORT = "a photo of a cat sitting on a windowsill, soft morning light"
# 154 tokens with weights 1.3 and 0.8: three chunks (75 + 75 + 4).
LONG = (
    "a majestic castle on a rocky cliff above a stormy sea, (golden hour lighting:1.3), dramatic clouds, "
    "waves crashing against the rocks, seagulls in the sky, ancient stone walls covered in moss and ivy, "
    "tall towers with pointed roofs, flags waving in the wind, a narrow bridge leading to the gate, "
    "(blurry background:0.8), lanterns glowing in the windows, a winding path through wildflowers, "
    "distant mountains with snowy peaks, (highly detailed:1.3), intricate architecture, warm and cold colour "
    "contrast, cinematic composition, volumetric light rays through the mist, reflections on wet stones, "
    "a lone knight riding a white horse towards the castle, (film grain:0.8), sharp focus, "
    "autumn leaves drifting over the battlements, a raven perched on the tallest spire, "
    "smoke rising from the chimneys of the village below, (muted colours:0.8)"
)
# Three parts; the first spans two chunks, so BREAK also closes a chunk that is not full.
BREAK_PARTS = [
    "a castle on a hill at dusk, (sunset:1.2), towers and banners, a stone bridge over a river, "
    "knights on horseback riding through the gate, villagers at the market, smoke from chimneys, "
    "a forest of tall pines behind the walls, mountains far away, birds over the water, "
    "lanterns along the road, a wooden cart full of apples, children playing near the well, a bell tower ringing",
    "a red dragon flying above the castle, (detailed scales:1.3), wings spread wide",
    "(blue sky:0.9), soft clouds",
]
BREAK_PROMPT = " BREAK ".join(BREAK_PARTS)


@dataclass(frozen=True)
class Case:
    """One comparison: a prompt (SDXL: optionally a separate text_l) at one clip_skip."""

    name: str
    prompt: str
    clip_skip: int = 0
    prompt_l: str | None = None
    standalone: bool = False  # ours loads ComfyUI's standalone files instead of the checkpoint

    def __str__(self) -> str:
        return self.name


# Every prompt kind and every clip_skip at least once per family (a CLI run costs a model load, so not
# the whole cross product), one run on ComfyUI's standalone files, and (SDXL) separate text_g / text_l.
SD15_CASES = [
    Case("short-skip0", SHORT, 0),
    Case("short-skip3", SHORT, 3),
    Case("long154-skip0", LONG, 0),
    Case("long154-skip1", LONG, 1),
    Case("break-skip1-standalone", BREAK_PROMPT, 1, standalone=True),
]
SDXL_CASES = [
    Case("short-skip0", SHORT, 0),
    Case("short-skip-1", SHORT, -1),
    Case("long154-skip1", LONG, 1),
    Case("break-skip3", BREAK_PROMPT, 3),
    Case("long154-skip0-standalone", LONG, 0, standalone=True),
    # CLIPTextEncodeSDXL: text_g of 1 chunk, text_l of 3 (ComfyUI pads CLIP-G with empty chunks, pad id 0).
    Case("text_g-short-text_l-long154-skip1", SHORT, 1, prompt_l=LONG),
]
# SD2.x: layer 23 with the final LayerNorm, -1 the normalised final layer, pooled projected (ComfyUI's
# SD2ClipModel returns the projected pooled vector). The refiner: CLIP-G alone, no LayerNorm.
SD2_CASES = [
    Case("short-skip0", SHORT, 0),
    Case("long154-skip-1", LONG, -1),
    Case("break-skip3", BREAK_PROMPT, 3),
    Case("long154-skip1-standalone", LONG, 1, standalone=True),
]
REFINER_CASES = [
    Case("short-skip0", SHORT, 0),
    Case("long154-skip-1", LONG, -1),
    Case("break-skip1-standalone", BREAK_PROMPT, 1, standalone=True),
]


def test_prompts_have_the_intended_shape():
    long = describe_chunks(chunk_prompt(LONG))
    assert long["tokens"] == 154 and long["chunks"] == 3
    assert describe_chunks(chunk_prompt(BREAK_PARTS[0]))["chunks"] == 2
    assert describe_chunks(chunk_prompt(BREAK_PROMPT))["chunks"] == 4


# ---------------------------------------------------------------------------------------------- ComfyUI


@pytest.fixture(scope="module")
def embeddings_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("embeddings"))


def load_native(full_size_models, embeddings_dir, names: list[str], model_class: str, clip_type=None):
    """What ComfyUI's CLIPLoader/DualCLIPLoader return for the full-size files ``names`` (``comfy.sd.load_clip``,
    type stable_diffusion unless given); checks that ComfyUI built ``model_class`` from them."""
    import comfy.sd

    paths = [str(full_size_models(name)) for name in names]
    clip_type = comfy.sd.CLIPType.STABLE_DIFFUSION if clip_type is None else clip_type
    clip = comfy.sd.load_clip(paths, embedding_directory=embeddings_dir, clip_type=clip_type)
    assert type(clip.cond_stage_model).__name__ == model_class
    return clip


@pytest.fixture(scope="module")
def comfy_sd15(comfy_path, full_size_models, embeddings_dir):
    """What CLIPLoader(clip_l.safetensors, type stable_diffusion) returns."""
    return load_native(full_size_models, embeddings_dir, ["clip_l.safetensors"], "SD1ClipModel")


@pytest.fixture(scope="module")
def comfy_sdxl(comfy_path, full_size_models, embeddings_dir):
    """What DualCLIPLoader(clip_l.safetensors, clip_g.safetensors, type sdxl) returns."""
    import comfy.sd

    # DualCLIPLoader's own lookup: ComfyUI has no CLIPType.SDXL, "sdxl" falls back to STABLE_DIFFUSION,
    # which with two files builds SDXLClipModel.
    clip_type = getattr(comfy.sd.CLIPType, "SDXL", comfy.sd.CLIPType.STABLE_DIFFUSION)
    names = ["clip_l.safetensors", "clip_g.safetensors"]
    return load_native(full_size_models, embeddings_dir, names, "SDXLClipModel", clip_type)


@pytest.fixture(scope="module")
def comfy_sd2(comfy_path, full_size_models, embeddings_dir):
    """What CLIPLoader(clip_h.safetensors, type stable_diffusion) returns."""
    return load_native(full_size_models, embeddings_dir, ["clip_h.safetensors"], "SD2ClipModel")


@pytest.fixture(scope="module")
def comfy_refiner(comfy_path, full_size_models, embeddings_dir):
    """What CLIPLoader(clip_g.safetensors, type stable_diffusion) returns."""
    return load_native(full_size_models, embeddings_dir, ["clip_g.safetensors"], "SDXLRefinerClipModel")


def comfy_tokens(clip, text: str, text_l: str | None):
    """CLIPTextEncode's tokens, or CLIPTextEncodeSDXL's when text_l is given."""
    tokens = clip.tokenize(text)
    if text_l is None:
        return tokens
    tokens["l"] = clip.tokenize(text_l)["l"]
    empty = clip.tokenize("")
    while len(tokens["l"]) < len(tokens["g"]):
        tokens["l"] += empty["l"]
    while len(tokens["l"]) > len(tokens["g"]):
        tokens["g"] += empty["g"]
    return tokens


def comfy_encode(clip, case: Case, family: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(cond, pooled) the way a ComfyUI graph computes them for ``case``."""
    if case.clip_skip != 0:  # CLIPSetLastLayer
        clip = clip.clone()
        clip.clip_layer(-(case.clip_skip + (1 if family == "sd1" else 2)))
    parts = case.prompt.split(" BREAK ")  # ConditioningConcat of the parts, in order
    conds, pooled = [], None
    for part in parts:
        out = clip.encode_from_tokens(comfy_tokens(clip, part, case.prompt_l), return_pooled=True, return_dict=True)
        conds.append(out["cond"])
        pooled = out["pooled_output"] if pooled is None else pooled
    return torch.cat(conds, dim=1), pooled


# ---------------------------------------------------------------------------------------------- ours


def cli_encode(models: list, case: Case, out_path) -> tuple[torch.Tensor, torch.Tensor, dict]:
    cmd = [sys.executable, "-m", "clip_suite", "encode", "--model", str(models[0])]
    if len(models) > 1:
        cmd += ["--model-2", str(models[1])]
    cmd += ["--prompt", case.prompt, f"--clip-skip={case.clip_skip}", "--out", str(out_path)]
    if case.prompt_l is not None:
        cmd += ["--prompt-l", case.prompt_l]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=os.environ.copy())
    assert result.returncode == 0, f"{' '.join(cmd[:4])} failed:\n{result.stderr}"
    with safe_open(str(out_path), "pt") as f:
        return f.get_tensor("cond"), f.get_tensor("pooled"), f.metadata()


# ---------------------------------------------------------------------------------------------- compare


def differences(ours: torch.Tensor, ref: torch.Tensor) -> tuple[float, float, float]:
    """(max |diff|, mean |diff|, max |ref|)."""
    d = (ours.double() - ref.double()).abs()
    return float(d.max()), float(d.mean()), float(ref.abs().max())


def check(case: Case, family: str, ours: tuple, theirs: tuple) -> None:
    report, failures = [], []
    for name, a, b in (("cond", ours[0], theirs[0]), ("pooled", ours[1], theirs[1])):
        if a.shape != b.shape:
            failures.append(f"{name}: shape {tuple(a.shape)}, ComfyUI {tuple(b.shape)}")
            continue
        mx, mean, scale = differences(a, b)
        shape = tuple(a.shape)
        report.append(f"{name} {shape} max {mx:.3e} mean {mean:.3e} (max|ref| {scale:.3g}, rel {mx / scale:.1e})")
        if not mx <= TOLERANCE * scale:
            failures.append(f"{name}: max diff {mx:.3e} > {TOLERANCE} x {scale:.3g}; mean diff {mean:.3e}")
    print(f"\n{family} {case}: " + "; ".join(report))
    assert not failures, f"{family} {case}: " + "; ".join(failures)


@pytest.mark.parametrize("case", SD15_CASES, ids=str)
def test_sd15_matches_comfyui(case, comfy_sd15, full_size_models, tmp_path):
    model = "clip_l.safetensors" if case.standalone else "sd15_te.safetensors"
    cond, pooled, meta = cli_encode([full_size_models(model)], case, tmp_path / "out.safetensors")
    assert meta["architecture"] == "sd1"
    check(case, "sd1", (cond, pooled), comfy_encode(comfy_sd15, case, "sd1"))


@pytest.mark.parametrize("case", SDXL_CASES, ids=str)
def test_sdxl_matches_comfyui(case, comfy_sdxl, full_size_models, tmp_path):
    if case.standalone:
        models = [full_size_models("clip_l.safetensors"), full_size_models("clip_g.safetensors")]
    else:
        models = [full_size_models("sdxl_te.safetensors")]
    cond, pooled, meta = cli_encode(models, case, tmp_path / "out.safetensors")
    assert meta["architecture"] == "sdxl"
    check(case, "sdxl", (cond, pooled), comfy_encode(comfy_sdxl, case, "sdxl"))


@pytest.mark.parametrize("case", SD2_CASES, ids=str)
def test_sd2_matches_comfyui(case, comfy_sd2, full_size_models, tmp_path):
    model = "clip_h.safetensors" if case.standalone else "sd2_te.safetensors"
    cond, pooled, meta = cli_encode([full_size_models(model)], case, tmp_path / "out.safetensors")
    assert meta["architecture"] == "sd2"
    assert cond.shape[-1] == 1024 and pooled.shape == (1, 1024)
    check(case, "sd2", (cond, pooled), comfy_encode(comfy_sd2, case, "sd2"))


@pytest.mark.parametrize("case", REFINER_CASES, ids=str)
def test_sdxl_refiner_matches_comfyui(case, comfy_refiner, full_size_models, tmp_path):
    model = "clip_g.safetensors" if case.standalone else "sdxl_refiner_te.safetensors"
    cond, pooled, meta = cli_encode([full_size_models(model)], case, tmp_path / "out.safetensors")
    assert meta["architecture"] == "sdxl_refiner"
    assert cond.shape[-1] == 1280 and pooled.shape == (1, 1280)
    check(case, "sdxl_refiner", (cond, pooled), comfy_encode(comfy_refiner, case, "sdxl_refiner"))
