"""A1111 prompt editing/alternation inside a real ComfyUI: the conditioning entries our encoder writes
(steps > 0) against ComfyUI's own sampling code.

- sigma rule: for steps 20 and 30, schedulers normal, karras, exponential and sgm_uniform, and 8 schedule
  prompts, ComfyUI's ``calculate_sigmas`` (on ``ModelSamplingDiscrete``), ``calculate_start_end_timesteps``
  (``percent_to_sigma``) and ``get_area_and_mult`` select exactly one entry at each step's sigma, and its
  tensor equals our encoding (steps = 0) of the text A1111 1.10 uses at that step, within 1e-6 relative;
- a real sampler: KSampler (euler and dpmpp_2m) on a probe model, a tiny SD1.5 ``BaseModel`` whose forward
  pass is replaced through ``model_function_wrapper`` by a recorder of the conditioning it receives at
  each call; the recorded cond at step i is the encoding of step i's A1111 text;
- AND: with ``strength`` = the AND weights, ComfyUI's CFG result equals A1111's
  ``uncond + cfg * sum_i w_i (c_i - uncond)`` exactly when the KSampler's cfg is A1111's times sum(w)
  (checked on the denoised values ComfyUI computes, through a post-CFG hook on a probe model).
"""

from __future__ import annotations

import types

import pytest
import torch
from comfy_harness import sink, suite_encode, suite_loader

from clip_suite.clip_impl.a1111.schedule import step_texts

PROMPTS = [
    "a [dog:cat:0.5] in a garden",
    "a photo of a [red|green|blue] ball",
    "[a castle:a ruin:7] on a hill, [storm::0.4]",
    "portrait, [:smiling:0.25], (detailed:1.2)",
    "a[b:[c:d:0.8]:0.3]e, [oil|water]colour",
    "[[cat|dog]:[bird|fish]:10] in the sky",
    "masterpiece, [(sunset:1.3):(night:0.8):0.6], city",
    "forest [morning:evening:12] [fog|rain]",
]
STEPS = (20, 30)
SCHEDULERS = ("normal", "karras", "exponential", "sgm_uniform")
A1111 = dict(chunking="a1111", weighting="a1111")


def _reference_texts() -> list[str]:
    texts = {t for p in PROMPTS for n in STEPS for t in step_texts(p, n)}
    return sorted(texts)


@pytest.fixture(scope="module")
def encoded(comfy):
    """Run one graph: every (prompt, steps, scheduler) encoder, and one steps = 0 encoder per A1111 text."""
    comfy.release()
    graph = {"1": suite_loader("checkpoints/sd15_te.safetensors")}
    keys = {}
    for p, prompt in enumerate(PROMPTS):
        for steps in STEPS:
            for scheduler in SCHEDULERS:
                node = f"s{p}_{steps}_{scheduler}"
                graph[node] = suite_encode("1", prompt, **A1111, steps=steps, scheduler=scheduler)
                keys[(prompt, steps, scheduler)] = node
    refs = {}
    for i, text in enumerate(_reference_texts()):
        graph[f"r{i}"] = suite_encode("1", text, **A1111)
        refs[text] = f"r{i}"
    nodes = list(keys.values()) + list(refs.values())
    for start in range(0, len(nodes), 8):
        graph[f"sink{start}"] = sink(*nodes[start:start + 8])
    comfy.run(graph)
    out = ({k: comfy.output(n) for k, n in keys.items()}, {t: comfy.output(n) for t, n in refs.items()})
    yield out
    comfy.release()


def _close(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a - b).abs().max() / b.abs().max())


def test_one_entry_per_step_with_a1111_text(comfy, encoded):
    import comfy.model_sampling
    import comfy.sampler_helpers
    import comfy.samplers

    by_key, refs = encoded
    model = types.SimpleNamespace(model_sampling=comfy.model_sampling.ModelSamplingDiscrete())
    x = torch.zeros(1, 4, 8, 8)
    checked = 0
    for (prompt, steps, scheduler), conditioning in by_key.items():
        conds = comfy.sampler_helpers.convert_cond(conditioning)
        comfy.samplers.calculate_start_end_timesteps(model, conds)
        sigmas = comfy.samplers.calculate_sigmas(model.model_sampling, scheduler, steps)
        texts = step_texts(prompt, steps)
        assert len(sigmas) == steps + 1
        for i in range(steps):
            active = [j for j, c in enumerate(conds) if comfy.samplers.get_area_and_mult(c, x, sigmas[i:i + 1]) is not None]
            assert len(active) == 1, f"{prompt!r} steps {steps} {scheduler}: step {i} has entries {active}"
            ratio = _close(conditioning[active[0]][0], refs[texts[i]][0][0])
            assert ratio <= 1e-6, f"{prompt!r} steps {steps} {scheduler} step {i}: {ratio:.2e}"
            checked += 1
    print(f"checked {checked} steps; entries per encoder: {sorted({len(c) for c in by_key.values()})}")


def _tiny_sd15_patcher():
    """A ModelPatcher over a tiny SD1.5 BaseModel (its UNet never runs: the tests replace the forward pass)."""
    import comfy.model_base
    import comfy.model_patcher
    import comfy.supported_models

    unet = {"in_channels": 4, "out_channels": 4, "model_channels": 32, "num_res_blocks": [1], "channel_mult": [1],
            "transformer_depth": [0], "transformer_depth_output": [0, 0], "transformer_depth_middle": -2,
            "context_dim": 768, "num_heads": 1, "num_head_channels": -1, "use_spatial_transformer": True,
            "use_linear_in_transformer": False, "adm_in_channels": None, "use_temporal_attention": False,
            "image_size": 32, "legacy": False, "dims": 2, "use_checkpoint": False}
    config = comfy.supported_models.SD15(unet)
    config.unet_config = unet
    model = comfy.model_base.BaseModel(config, device=torch.device("cpu"))
    return comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


class ClipSuiteTestProbeModel:
    """Test-only MODEL: a tiny SD1.5 BaseModel whose forward pass is replaced by a recorder. Each call
    appends (sigma, cond rows) to ``CALLS`` and returns zeros (an eps model that predicts no noise)."""

    CATEGORY = "tests"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "make"
    CALLS: list = []

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0})}}

    def make(self, seed):
        patcher = _tiny_sd15_patcher()

        def record(apply_model, args):
            rows = args["c"]["c_crossattn"]
            conds = [rows[k].clone() for k, kind in enumerate(args["cond_or_uncond"]) if kind == 0]
            type(self).CALLS.append((float(args["timestep"][0]), conds))
            return torch.zeros_like(args["input"])

        patcher.set_model_unet_function_wrapper(record)
        return (patcher,)


@pytest.mark.parametrize("sampler", ["euler", "dpmpp_2m"])
def test_ksampler_receives_the_step_text(comfy, encoded, sampler):
    by_key, refs = encoded
    comfy.register("ClipSuiteTestProbeModel", ClipSuiteTestProbeModel)
    prompt, steps, scheduler = PROMPTS[5], 20, "karras"
    graph = {
        "1": suite_loader("checkpoints/sd15_te.safetensors"),
        "2": suite_encode("1", prompt, **A1111, steps=steps, scheduler=scheduler),
        "3": suite_encode("1", "", **A1111),
        "4": {"class_type": "ClipSuiteTestProbeModel", "inputs": {"seed": 0}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "6": {"class_type": "KSampler", "inputs": {
            "model": ["4", 0], "seed": 1, "steps": steps, "cfg": 7.0, "sampler_name": sampler, "scheduler": scheduler,
            "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["5", 0], "denoise": 1.0}},
        "7": {"class_type": "PreviewAny", "inputs": {"source": ["6", 0]}},
    }
    ClipSuiteTestProbeModel.CALLS.clear()
    comfy.run(graph)
    calls = ClipSuiteTestProbeModel.CALLS
    texts = step_texts(prompt, steps)
    assert len(calls) == steps, f"{sampler} made {len(calls)} model calls for {steps} steps"
    import comfy.model_sampling
    import comfy.samplers

    sigmas = comfy.samplers.calculate_sigmas(comfy.model_sampling.ModelSamplingDiscrete(), scheduler, steps)
    for i, (sigma, conds) in enumerate(calls):
        assert abs(sigma - float(sigmas[i])) <= 1e-5 * float(sigmas[i]), (i, sigma, float(sigmas[i]))
        assert len(conds) == 1, f"step {i}: the sampler received {len(conds)} positive entries"
        ratio = _close(conds[0].unsqueeze(0), refs[texts[i]][0][0])
        assert ratio <= 1e-6, f"{sampler} step {i} ({texts[i]!r}): {ratio:.2e}"
    print(f"{sampler}: {len(calls)} calls, texts {len(set(texts))} distinct, each step got its A1111 text")


class ClipSuiteTestMeanModel:
    """Test-only MODEL: its prediction (what ``apply_model`` returns: the denoised latent) is the mean of each
    row's cross-attention conditioning, so every entry predicts something else; records ComfyUI's post-CFG values (input, sigma, cond/uncond/CFG denoised)."""

    CATEGORY = "tests"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "make"
    CFG: list = []

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0})}}

    def make(self, seed):
        patcher = _tiny_sd15_patcher()

        def predict(apply_model, args):
            means = args["c"]["c_crossattn"].mean(dim=(1, 2))  # (rows,)
            return torch.ones_like(args["input"]) * means.view(-1, 1, 1, 1)

        def post_cfg(args):
            type(self).CFG.append({k: args[k].clone() for k in ("input", "sigma", "denoised", "cond_denoised",
                                                                 "uncond_denoised")})
            return args["denoised"]

        patcher.set_model_unet_function_wrapper(predict)
        patcher.set_model_sampler_post_cfg_function(post_cfg)
        return (patcher,)


def test_and_strengths_equal_a1111_sum_with_scaled_cfg(comfy):
    comfy.register("ClipSuiteTestMeanModel", ClipSuiteTestMeanModel)
    prompt, weights, cfg_a1111 = "a red cube AND a blue sphere :0.7 AND a green cone :0.8", [1.0, 0.7, 0.8], 5.0
    total = sum(weights)
    graph = {
        "1": suite_loader("checkpoints/sd15_te.safetensors"),
        "2": suite_encode("1", prompt, **A1111),
        "3": suite_encode("1", "ugly", **A1111),
        "4": {"class_type": "ClipSuiteTestMeanModel", "inputs": {"seed": 0}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "6": {"class_type": "KSampler", "inputs": {
            "model": ["4", 0], "seed": 1, "steps": 3, "cfg": cfg_a1111 * total, "sampler_name": "euler",
            "scheduler": "normal", "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["5", 0],
            "denoise": 1.0}},
        "7": {"class_type": "PreviewAny", "inputs": {"source": ["6", 0]}},
        "99": sink("2", "3"),
    }
    ClipSuiteTestMeanModel.CFG.clear()
    comfy.run(graph)
    positive, negative = comfy.output("2"), comfy.output("3")
    assert [c[1]["strength"] for c in positive] == weights
    assert "multiply the sampler's cfg by 2.5" in comfy.ui("2")["text"][0]
    assert len(ClipSuiteTestMeanModel.CFG) == 3
    for step in ClipSuiteTestMeanModel.CFG:
        ones = torch.ones_like(step["input"])
        d = [ones * float(c[0].mean()) for c in positive]  # each entry's denoised prediction
        u = ones * float(negative[0][0].mean())
        torch.testing.assert_close(step["uncond_denoised"], u, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(step["cond_denoised"], sum(w * di for w, di in zip(weights, d)) / total,
                                   rtol=1e-5, atol=1e-5)  # ComfyUI: the strength-weighted mean
        a1111 = u + cfg_a1111 * sum(w * (di - u) for w, di in zip(weights, d))  # A1111: the weighted sum
        torch.testing.assert_close(step["denoised"], a1111, rtol=1e-4, atol=1e-4)
