"""ComfyUI's own CLIP without a second copy, and our towers under ComfyUI's model management (issue 13).

- LoHa and LoKr text-encoder patches applied by ComfyUI's LoraLoader reach our encoders (they run on the
  clone's own, patched weights), and a ``lowvram`` partial load (weights cast and patched per use by
  ``comfy.ops``) gives what ComfyUI's own encode gives in the same state.
- Our loader: one tower per device (fault 1) and ``device=gpu`` under ``--novram``/``--lowvram`` (fault 2),
  with ComfyUI's real model management; a monkeypatched ``get_torch_device`` stands in for CUDA (nothing is
  moved there: the tests stop before a forward on that device).
"""

import pytest
import torch
from safetensors.torch import save_file

from comfy_harness import ENCODE, LONG_PROMPT as PROMPT, assert_conditioning_close, sink, suite_encode

LINEARS = {"self_attn_q_proj": (768, 768), "self_attn_k_proj": (768, 768), "self_attn_v_proj": (768, 768),
           "self_attn_out_proj": (768, 768), "mlp_fc1": (3072, 768), "mlp_fc2": (768, 3072)}


def loha_te(layers, rank, g) -> dict:
    """LoHa (``hada_w1_a/b``, ``hada_w2_a/b``, ``alpha``) on CLIP-L's Linears, kohya names."""
    sd = {}
    for layer in layers:
        for target, (out_dim, in_dim) in LINEARS.items():
            name = f"lora_te_text_model_encoder_layers_{layer}_{target}"
            for w in ("w1", "w2"):
                sd[f"{name}.hada_{w}_a"] = (torch.randn(out_dim, rank, generator=g) * 0.3).half()
                sd[f"{name}.hada_{w}_b"] = (torch.randn(rank, in_dim, generator=g) * 0.3).half()
            sd[f"{name}.alpha"] = torch.tensor(float(rank) / 2, dtype=torch.float16)
    return sd


def lokr_te(layers, g) -> dict:
    """LoKr (``lokr_w1`` (8, 8) kron ``lokr_w2``) on CLIP-L's Linears, kohya names."""
    sd = {}
    for layer in layers:
        for target, (out_dim, in_dim) in LINEARS.items():
            name = f"lora_te_text_model_encoder_layers_{layer}_{target}"
            sd[f"{name}.lokr_w1"] = (torch.randn(8, 8, generator=g) * 0.3).half()
            sd[f"{name}.lokr_w2"] = (torch.randn(out_dim // 8, in_dim // 8, generator=g) * 0.05).half()
    return sd


@pytest.fixture(scope="module")
def adapters(comfy, tmp_path_factory):
    d = tmp_path_factory.mktemp("cs_adapters")
    g = torch.Generator().manual_seed(5)
    save_file(loha_te(range(0, 6), rank=4, g=g), str(d / "cs_loha_te.safetensors"))
    save_file(lokr_te(range(6, 12), g=g), str(d / "cs_lokr_te.safetensors"))
    comfy.folder_paths.add_model_folder_path("loras", str(d), is_default=True)
    yield d
    comfy.folder_paths.folder_names_and_paths["loras"][0].remove(str(d))
    comfy.release()


def adapter(clip_node, name, strength=1.0):
    return {"class_type": "ClipSuiteTestLoraLoaderClip",
            "inputs": {"clip": [clip_node, 0], "lora_name": name, "strength_clip": strength}}


def native_encode(clip_node):
    return {"class_type": "CLIPTextEncode", "inputs": {"clip": [clip_node, 0], "text": PROMPT}}


def test_loha_and_lokr_through_loraloader(comfy, adapters):
    comfy.release()
    graph = {
        "1": {"class_type": "CLIPLoader", "inputs": {"clip_name": "clip_l.safetensors", "type": "stable_diffusion",
                                                     "device": "default"}},
        "2": adapter("1", "cs_loha_te.safetensors"), "3": adapter("2", "cs_lokr_te.safetensors", 0.8),
        "4": native_encode("2"), "5": suite_encode("2", PROMPT),
        "6": native_encode("3"), "7": suite_encode("3", PROMPT),
        "8": native_encode("1"), "9": suite_encode("1", PROMPT, clip_skip=1),
        "10": {"class_type": "CLIPSetLastLayer", "inputs": {"clip": ["3", 0], "stop_at_clip_layer": -2}},
        "11": native_encode("10"), "12": suite_encode("3", PROMPT, clip_skip=1),
        "99": sink("4", "5", "6", "7", "8", "9", "11", "12"),
    }
    comfy.run(graph)
    ratios = {
        "LoHa": assert_conditioning_close(comfy.output("5"), comfy.output("4"), "LoHa into ours"),
        "LoHa + LoKr": assert_conditioning_close(comfy.output("7"), comfy.output("6"), "LoHa + LoKr into ours"),
        "LoHa + LoKr, clip_skip 1": assert_conditioning_close(comfy.output("12"), comfy.output("11"), "skip 1"),
    }
    plain, loha, both = (comfy.output(n)[0][0] for n in ("8", "4", "6"))
    scale = plain.abs().max()
    assert (loha - plain).abs().max() > 1e-3 * scale and (both - loha).abs().max() > 1e-3 * scale  # they patch
    host = comfy.pack_module("nodes.host").get_host()
    hosted = host.clip_for(comfy.output("3"))
    assert sum(p.numel() for t in hosted.model.towers.values() for p in t.parameters()) == 0  # no copy
    assert hosted.patchers["l"] is comfy.output("3").patcher
    print("LoHa/LoKr max|diff|/max|ref|:", {k: f"{v:.2e}" for k, v in ratios.items()})
    comfy.release()


def test_lowvram_partial_load_matches_comfyui(comfy, adapters, monkeypatch):
    """Every layer left off the device with its LoHa patch as a per-use ``weight_function`` (a lowvram load):
    our encoder computes with what ComfyUI's own forward would, through ``comfy.ops.cast_bias_weight``."""
    comfy.release()
    run = {"1": {"class_type": "CLIPLoader", "inputs": {"clip_name": "clip_l.safetensors",
                                                        "type": "stable_diffusion", "device": "default"}},
           "2": adapter("1", "cs_loha_te.safetensors"), "3": native_encode("2"), "99": sink("3")}
    comfy.run(run)
    clip, full_load_ref = comfy.output("2"), comfy.output("3")
    comfy.mm.unload_all_models()
    patcher = clip.patcher
    patcher.patch_model(device_to=torch.device("cpu"), lowvram_model_memory=1)
    try:
        with_functions = [m for m in patcher.model.modules() if getattr(m, "weight_function", None)]
        assert len(with_functions) == 36  # 6 layers x 6 Linears carry their LoHa as a per-use patch
        monkeypatch.setattr(comfy.mm, "load_models_gpu", lambda *a, **k: None)  # keep this state for both
        ref = [[*clip.encode_from_tokens(clip.tokenize(PROMPT), return_pooled=True)]]
        ref = [[ref[0][0], {"pooled_output": ref[0][1]}]]
        ours = comfy.nodes.NODE_CLASS_MAPPINGS["ClipSuiteTextEncode"]().encode(clip, PROMPT, 0, **ENCODE)["result"][0]
    finally:
        patcher.unpatch_model(device_to=torch.device("cpu"))
    r = assert_conditioning_close(ours, ref, "lowvram LoHa into ours")
    r_full = assert_conditioning_close(ours, full_load_ref, "lowvram vs full load", rel=1e-2)
    print(f"lowvram: ours vs ComfyUI {r:.2e}; vs the full load (fp16-rounded patch) {r_full:.2e}")
    comfy.release()


@pytest.fixture()
def comfy_host(comfy, monkeypatch):
    """Our ComfyHost with a CUDA device as ComfyUI's main device (get_torch_device monkeypatched)."""
    monkeypatch.setattr(comfy.mm, "get_torch_device", lambda: torch.device("cuda"))
    return comfy.pack_module("nodes.host").get_host()


def test_one_tower_per_device(comfy, comfy_host, model_dir):
    """Fault 1: loads of one file with different devices never share a tower (each tower has one patcher,
    one load device); loads with the same device still share it."""
    path = str(model_dir / "sdxl.safetensors")
    on_cpu = comfy_host.load([path], precision="fp32", device="cpu")
    on_gpu = comfy_host.load([path], precision="fp32", device="gpu")
    again = comfy_host.load([path], precision="fp32", device="gpu")
    for role in "lg":
        assert on_cpu.model.towers[role] is not on_gpu.model.towers[role], "one tower, two devices"
        assert on_gpu.model.towers[role] is again.model.towers[role] and on_gpu.patchers[role] is again.patchers[role]
        assert on_cpu.patchers[role].load_device.type == "cpu" and on_gpu.patchers[role].load_device.type == "cuda"
        assert on_cpu.patchers[role] is not on_gpu.patchers[role]


@pytest.mark.parametrize("state", ["NO_VRAM", "LOW_VRAM"])
def test_gpu_under_novram_and_lowvram_falls_back_to_cpu(comfy, comfy_host, model_dir, monkeypatch, state):
    """Fault 2: ComfyUI would not move our plain modules under --novram/--lowvram (partial loads), yet mark
    them loaded; device=gpu falls back to the CPU with fp32 storage, and says so."""
    monkeypatch.setattr(comfy.mm, "vram_state", getattr(comfy.mm.VRAMState, state))
    cpu = torch.device("cpu")
    assert comfy_host.devices("gpu") == (cpu, cpu)
    hosted = comfy_host.load([str(model_dir / "sd15.safetensors")], precision="auto", device="gpu")
    tower = hosted.model.towers["l"]
    assert tower.device == cpu and tower.text_model.embeddings.token_embedding.weight.dtype == torch.float32
    assert hosted.patchers["l"].load_device == cpu
    flag = "--novram" if state == "NO_VRAM" else "--lowvram"
    assert len(hosted.notes) == 1 and flag in hosted.notes[0] and "loaded on the CPU in fp32" in hosted.notes[0]
    monkeypatch.setattr(comfy.mm, "vram_state", comfy.mm.VRAMState.NORMAL_VRAM)
    assert comfy_host.devices("gpu")[0].type == "cuda"  # with VRAM to use, gpu means the GPU


def test_a_fresh_load_is_counted_at_its_final_size_and_moves_wait_for_no_copy(comfy, comfy_host, model_dir, tmp_path,
                                                                               monkeypatch):
    """Our loader leaves the blocks' matrices mapped (fp16) and copies them to fp32 later: ComfyUI's
    ModelPatcher, which sizes a model once, counts the final fp32 size; a move (``.to()``, as ComfyUI
    loads and offloads) meanwhile takes the parameters along, and no copy replaces them afterwards."""
    pending_copies = comfy.pack_module("clip_impl.towers.pending_copies")
    monkeypatch.setattr(pending_copies.PendingCopies, "start", lambda self: None)
    path = tmp_path / "sd15_fresh.safetensors"
    path.write_bytes((model_dir / "sd15.safetensors").read_bytes())
    hosted = comfy_host.load([str(path)], precision="auto", device="cpu")
    tower, patcher = hosted.model.towers["l"], hosted.patchers["l"]
    assert len(tower.pending) > 0 and tower.text_model.encoder.layers[0].mlp.fc1.weight.dtype == torch.float16
    final = tower.pending.final_nbytes(tower)
    assert patcher.model_size() == final
    tower.pending.settle()
    assert comfy.mm.module_size(patcher.model) == final and all(p.dtype == torch.float32 for p in tower.parameters())

    again = comfy_host.load([str(path)], precision="fp32", device="cpu")  # another tower, copies pending
    assert len(again.model.towers["l"].pending) > 0
    comfy_host.prepare(again)  # ComfyUI then moves submodules one by one: nothing may be left to copy
    assert len(again.model.towers["l"].pending) == 0

    moved = comfy_host.load([str(path)], precision="fp16", device="cpu")  # a third tower, copies pending
    tower, patcher = moved.model.towers["l"], moved.patchers["l"]
    assert len(tower.pending) > 0
    patcher.model.to("meta")  # what a load to another device does to our wrapper
    tower.pending.settle()
    assert len(tower.pending) == 0 and all(p.device.type == "meta" for p in tower.parameters())
