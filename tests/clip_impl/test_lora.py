"""Text-encoder LoRA: key styles, the maths against transformers' towers patched by hand, chains,
strengths, rounding, and the messages for LoRAs that do not fit.

The reference patches each HF Linear (q_proj, k_proj, v_proj separately, never our fused in_proj) with
W + strength * alpha / rank * up @ down, then runs the DESIGN 5 recipe on transformers' CLIPTextModel.
"""

import copy

import pytest
import torch
from safetensors.torch import save_file

from clip_suite.clip_impl.text.chunking import chunk_prompt
from clip_suite.clip_impl.text.encode import EncodeSettings, encode_prompt
from clip_suite.clip_impl.weights.loading import load_clip
from clip_suite.clip_impl.weights import apply_loras, read_lora, tower_for
from clip_suite.clip_impl.weights.files import ModelFileError
from helpers.compare import assert_close
from helpers.recipe_reference import project, tower_reference

PROMPT = "a (red:1.2) fox in the snow, oil painting"
KOHYA_TARGETS = {"q": "self_attn_q_proj", "k": "self_attn_k_proj", "v": "self_attn_v_proj",
                 "out": "self_attn_out_proj", "fc1": "mlp_fc1", "fc2": "mlp_fc2"}
HF_TARGETS = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj",
              "out": "self_attn.out_proj", "fc1": "mlp.fc1", "fc2": "mlp.fc2"}


def random_modules(width, layers, rank, seed, targets=tuple(KOHYA_TARGETS)):
    """[(layer, target, up (out, r), down (r, in))] for every layer and target (fp16-exact values)."""
    g = torch.Generator().manual_seed(seed)
    shapes = {"fc1": (4 * width, width), "fc2": (width, 4 * width)}
    out = []
    for layer in range(layers):
        for t in targets:
            o, i = shapes.get(t, (width, width))
            up = (torch.randn(o, rank, generator=g) * 0.2).half()
            down = (torch.randn(rank, i, generator=g) * 0.2).half()
            out.append((layer, t, up, down))
    return out


def kohya_keys(prefix, modules, alpha):
    sd = {}
    for layer, t, up, down in modules:
        name = f"{prefix}_text_model_encoder_layers_{layer}_{KOHYA_TARGETS[t]}"
        sd[f"{name}.lora_up.weight"], sd[f"{name}.lora_down.weight"] = up.clone(), down.clone()
        if alpha is not None:
            sd[f"{name}.alpha"] = torch.tensor(float(alpha), dtype=torch.float16)
    return sd


def peft_keys(prefix, modules):
    sd = {}
    for layer, t, up, down in modules:
        name = f"{prefix}.text_model.encoder.layers.{layer}.{HF_TARGETS[t]}"
        sd[f"{name}.lora_B.weight"], sd[f"{name}.lora_A.weight"] = up, down
    return sd


UNET_KEYS = {
    "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(8, 2).half(),
    "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(2, 8).half(),
    "lora_unet_down_blocks_0_attentions_0_proj_in.alpha": torch.tensor(2.0),
}


def patched_reference(hf_model, modules, scale, round_fp16):
    """A copy of the HF tower with W + scale * up @ down on each module's Linear (fp32 maths)."""
    ref = copy.deepcopy(hf_model)
    with torch.no_grad():
        for layer, t, up, down in modules:
            block = ref.text_model.encoder.layers[layer]
            lin = {"q": block.self_attn.q_proj, "k": block.self_attn.k_proj, "v": block.self_attn.v_proj,
                   "out": block.self_attn.out_proj, "fc1": block.mlp.fc1, "fc2": block.mlp.fc2}[t]
            w = lin.weight.float() + scale * (up.float() @ down.float())
            lin.weight.copy_(w.half().float() if round_fp16 else w)
    return ref


def sd1_reference(hf_model, text, layers=4):
    chunks = chunk_prompt(text)
    z, p = tower_reference(hf_model, [c.ids(49407) for c in chunks], [c.weights() for c in chunks], layers, True, 49407)
    return z, p[0:1]


@pytest.fixture(scope="module")
def sd1_lora(tmp_path_factory, l_model):
    d = tmp_path_factory.mktemp("loras")
    modules = random_modules(128, 4, rank=4, seed=7)
    save_file({**kohya_keys("lora_te", modules, alpha=2), **UNET_KEYS}, str(d / "sd1_kohya.safetensors"))
    return d / "sd1_kohya.safetensors", modules


@pytest.mark.parametrize("strength", [1.0, 0.5, -1.3])
def test_kohya_sd1_matches_patched_transformers(model_dir, l_model, sd1_lora, strength):
    path, modules = sd1_lora
    model = load_clip(model_dir / "sd15.safetensors")  # precision auto: patched weights rounded to fp16
    result = apply_loras(model, [(read_lora(path), strength)])
    ref_model = patched_reference(l_model, modules, strength * 2 / 4, round_fp16=True)
    out = encode_prompt(result.model, PROMPT, EncodeSettings(), cache=None)
    z, pooled = sd1_reference(ref_model, PROMPT)
    assert_close(out.cond, z, f"cond at strength {strength}")
    assert_close(out.pooled, pooled, f"pooled at strength {strength}")
    plain = encode_prompt(model, PROMPT, EncodeSettings(), cache=None)
    assert (plain.cond - out.cond).abs().max() > 1e-2, "the LoRA must change the encoding"
    assert result.notes == [f"LoRA sd1_kohya.safetensors at strength {strength:g}: CLIP-L 24 weights, rank 4"]
    assert result.warnings == []


def test_fp32_precision_keeps_the_unrounded_sum(model_dir, l_model, sd1_lora):
    path, modules = sd1_lora
    model = load_clip(model_dir / "sd15.safetensors", precision="fp32")
    result = apply_loras(model, [(read_lora(path), 1.0)])
    w = result.model.towers["l"].text_model.encoder.layers[1].self_attn.in_proj.weight
    ref = patched_reference(l_model, modules, 0.5, round_fp16=False).text_model.encoder.layers[1].self_attn
    assert torch.equal(w, torch.cat([ref.q_proj.weight, ref.k_proj.weight, ref.v_proj.weight]))
    rounded = apply_loras(load_clip(model_dir / "sd15.safetensors"), [(read_lora(path), 1.0)]).model
    w16 = rounded.towers["l"].text_model.encoder.layers[1].self_attn.in_proj.weight
    assert torch.equal(w16, w.half().float()) and not torch.equal(w16, w)


def test_original_towers_are_untouched_and_untouched_tensors_shared(model_dir, sd1_lora):
    path, _ = sd1_lora
    model = load_clip(model_dir / "sd15.safetensors")
    before = {k: v.clone() for k, v in model.towers["l"].state_dict().items()}
    patched = apply_loras(model, [(read_lora(path), 1.0)]).model
    tower, base = patched.towers["l"], model.towers["l"]
    assert tower is not base and tower.cache_id != base.cache_id
    assert all(torch.equal(v, model.towers["l"].state_dict()[k]) for k, v in before.items())
    emb, base_emb = tower.text_model.embeddings.token_embedding.weight, base.text_model.embeddings.token_embedding.weight
    assert emb is not base_emb and emb.data_ptr() == base_emb.data_ptr()  # shared storage, separate Parameters
    again = apply_loras(model, [(read_lora(path), 1.0)]).model
    assert again.towers["l"] is tower  # one patched tower per (tower, LoRA file, strength)


def test_chain_rounds_once_like_a_loraloader_chain(model_dir, l_model, sd1_lora):
    path, modules = sd1_lora
    model = load_clip(model_dir / "sd15.safetensors")
    lora = read_lora(path)
    once = apply_loras(model, [(lora, 0.4)]).model
    chained = apply_loras(once, [(lora, 0.6)]).model
    assert chained.extra["lora"]["base"]() is model and len(chained.extra["lora"]["chain"]) == 2
    w = chained.towers["l"].text_model.encoder.layers[2].mlp.fc1.weight
    layer, t, up, down = next(m for m in modules if m[0] == 2 and m[1] == "fc1")
    base = model.towers["l"].text_model.encoder.layers[2].mlp.fc1.weight.float()
    diff = up.float() @ down.float()
    expected = ((base + (0.4 * 0.5) * diff) + (0.6 * 0.5) * diff).half().float()
    assert torch.equal(w, expected)


def test_peft_sdxl_and_kohya_sdxl_give_the_same_towers(model_dir, l_model, g_model, tmp_path):
    mods_l = random_modules(128, 4, rank=3, seed=11)
    mods_g = random_modules(192, 5, rank=3, seed=12, targets=("q", "v", "fc2"))
    save_file(peft_keys("text_encoder", mods_l) | peft_keys("text_encoder_2", mods_g), str(tmp_path / "peft.safetensors"))
    save_file(kohya_keys("lora_te1", mods_l, alpha=3) | kohya_keys("lora_te2", mods_g, alpha=3),
              str(tmp_path / "kohya.safetensors"))
    model = load_clip(model_dir / "sdxl.safetensors")
    peft = apply_loras(model, [(read_lora(tmp_path / "peft.safetensors"), 0.7)]).model
    kohya = apply_loras(model, [(read_lora(tmp_path / "kohya.safetensors"), 0.7)]).model
    for role in "lg":
        for (k, a), b in zip(peft.towers[role].state_dict().items(), kohya.towers[role].state_dict().values()):
            assert torch.equal(a, b), f"{role} {k}"  # no alpha = alpha equal to the rank: scale 1
    out = encode_prompt(peft, PROMPT, EncodeSettings(), cache=None)
    # Reference: each HF tower patched on its own, SDXL recipe (penultimate layers, CLIP-G pooled projected).
    ref_l = patched_reference(l_model, mods_l, 0.7, round_fp16=True)
    ref_g = patched_reference(g_model, mods_g, 0.7, round_fp16=True)
    chunks = chunk_prompt(PROMPT)
    z_l, _ = tower_reference(ref_l, [c.ids(49407) for c in chunks], [c.weights() for c in chunks], 3, False, 49407)
    z_g, p_g = tower_reference(ref_g, [c.ids(0) for c in chunks], [c.weights() for c in chunks], 4, False, 0)
    assert_close(out.cond, torch.cat([z_l, z_g], dim=-1), "SDXL cond")
    assert_close(out.pooled, project(ref_g, p_g[0:1]), "SDXL pooled")


def test_text_projection_patch_and_prefix_map(model_dir, g_model, tmp_path):
    g = torch.Generator().manual_seed(3)
    up, down = torch.randn(96, 2, generator=g).half(), torch.randn(2, 192, generator=g).half()
    save_file({"lora_te2_text_projection.lora_up.weight": up, "lora_te2_text_projection.lora_down.weight": down},
              str(tmp_path / "proj.safetensors"))
    model = load_clip(model_dir / "sdxl.safetensors")
    patched = apply_loras(model, [(read_lora(tmp_path / "proj.safetensors"), 1.0)]).model
    base_w = model.towers["g"].text_projection.weight
    assert torch.equal(patched.towers["g"].text_projection.weight, (base_w + up.float() @ down.float()).half().float())
    assert patched.towers["l"] is model.towers["l"]  # untouched tower shared as is
    # ComfyUI's prefix map (comfy/lora.py model_lora_keys_clip)
    assert [tower_for("te", r) for r in ("l", "h", "g", "lg")] == ["l", "h", "g", "l"]
    assert [tower_for("te2", r) for r in ("l", "lg", "g")] == [None, "g", None]
    assert [tower_for("te1", r) for r in ("l", "lg", "g")] == ["l", "l", None]
    assert [tower_for("text_encoder", r) for r in ("g", "lg")] == ["g", "l"]


def test_strength_zero_and_unet_only(model_dir, sd1_lora, tmp_path):
    path, _ = sd1_lora
    model = load_clip(model_dir / "sd15.safetensors")
    assert apply_loras(model, [(read_lora(path), 0.0)]).model is model
    save_file(UNET_KEYS, str(tmp_path / "unet_only.safetensors"))
    result = apply_loras(model, [(read_lora(tmp_path / "unet_only.safetensors"), 1.0)])
    assert result.model is model
    assert result.warnings and "unet_only.safetensors has no text-encoder weights" in result.warnings[0]


def test_unknown_keys_are_reported(model_dir, tmp_path):
    mods = random_modules(128, 4, rank=2, seed=5, targets=("q",))
    extra = kohya_keys("lora_te", [(7, "q", *mods[0][2:])], alpha=None)  # a 5th..8th layer the model lacks
    extra |= kohya_keys("lora_te2", mods[:1], alpha=None)  # CLIP-G keys on an SD1.x model
    extra["lora_te_text_model_embeddings_token_embedding.lora_up.weight"] = torch.zeros(4, 2)
    save_file(kohya_keys("lora_te", mods, alpha=None) | extra, str(tmp_path / "odd.safetensors"))
    model = load_clip(model_dir / "sd15.safetensors")
    result = apply_loras(model, [(read_lora(tmp_path / "odd.safetensors"), 1.0)])
    assert result.model is not model
    assert len(result.warnings) == 1
    assert "3 text-encoder keys not applied" in result.warnings[0]


def test_loras_for_other_models_and_other_files_are_clear_errors(model_dir, tmp_path, emb_file):
    # an SD2.x LoRA (1024 wide) on an SD1.x model (128 wide here): shapes do not fit
    wide = random_modules(256, 1, rank=2, seed=1, targets=("q",))
    save_file(kohya_keys("lora_te", wide, alpha=None), str(tmp_path / "wide.safetensors"))
    model = load_clip(model_dir / "sd15.safetensors")
    with pytest.raises(ValueError, match=r"wide.safetensors: lora_te_text_model_encoder_layers_0_self_attn_q_proj .* another model"):
        apply_loras(model, [(read_lora(tmp_path / "wide.safetensors"), 1.0)])
    # only keys for a tower the model does not have (SDXL's CLIP-G on an SD1.x model)
    g_only = random_modules(192, 1, rank=2, seed=1, targets=("q",))
    save_file(kohya_keys("lora_te2", g_only, alpha=None), str(tmp_path / "g_only.safetensors"))
    with pytest.raises(ValueError, match="none of its 1 text-encoder layers fit SD1.x"):
        apply_loras(model, [(read_lora(tmp_path / "g_only.safetensors"), 1.0)])
    with pytest.raises(ModelFileError, match="is not a LoRA"):
        read_lora(emb_file)
    save_file({"lora_te_text_model_encoder_layers_0_self_attn_q_proj.hada_w1_a": torch.zeros(4, 2),
               "lora_te_text_model_encoder_layers_0_self_attn_q_proj.hada_w1_b": torch.zeros(2, 4)},
              str(tmp_path / "loha.safetensors"))
    with pytest.raises(ModelFileError, match="loha.safetensors: its text-encoder part is not a plain LoRA"):
        read_lora(tmp_path / "loha.safetensors")


@pytest.fixture()
def emb_file(tmp_path):
    save_file({"emb_params": torch.zeros(2, 128)}, str(tmp_path / "an_embedding.safetensors"))
    return tmp_path / "an_embedding.safetensors"


def test_fp16_storage_gives_the_same_patched_values(model_dir, sd1_lora):
    """ComfyUI on a GPU: towers stored in fp16 (storage_dtype), patched towers stay fp16 with equal values."""
    path, _ = sd1_lora
    lora = read_lora(path)
    fp16 = apply_loras(load_clip(model_dir / "sd15.safetensors", storage_dtype=torch.float16), [(lora, 0.7)]).model
    fp32 = apply_loras(load_clip(model_dir / "sd15.safetensors"), [(lora, 0.7)]).model
    for (name, a), b in zip(fp16.towers["l"].state_dict().items(), fp32.towers["l"].state_dict().values()):
        assert a.dtype == torch.float16 and torch.equal(a.float(), b), name


def test_patched_towers_reshare_after_a_move_and_do_not_keep_their_base(model_dir, sd1_lora):
    """Fault 5 of issue 13: a load/offload cycle (Module._apply gives every tensor new storage) must not
    leave a patched tower with a second copy of the weights it shares, and the patched model must not keep
    the unpatched one alive."""
    import gc
    import weakref

    from clip_suite.clip_impl.weights import reshare

    path, _ = sd1_lora
    model = load_clip(model_dir / "sd15.safetensors", precision="fp32")  # a model of its own (not shared)
    patched = apply_loras(model, [(read_lora(path), 0.7)]).model
    tower, base = patched.towers["l"], model.towers["l"]
    tower._apply(lambda t: t.clone())  # what a round trip through another device does to storage
    emb = tower.text_model.embeddings.token_embedding.weight
    assert emb.data_ptr() != base.text_model.embeddings.token_embedding.weight.data_ptr()
    assert reshare(tower) > 0
    assert emb.data_ptr() == base.text_model.embeddings.token_embedding.weight.data_ptr()
    patched_w = tower.text_model.encoder.layers[0].self_attn.in_proj.weight
    assert patched_w.data_ptr() != base.text_model.encoder.layers[0].self_attn.in_proj.weight.data_ptr()
    gone = weakref.ref(model)
    del model, base
    gc.collect()
    assert gone() is None, "the patched model keeps the unpatched one alive"
    with pytest.raises(ValueError, match="no longer loaded"):
        apply_loras(patched, [(read_lora(path), 1.0)])
