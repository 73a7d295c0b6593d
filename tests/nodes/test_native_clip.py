"""ComfyUI's own CLIP object (its cond_stage_model) driven through our tower interface, without ComfyUI:
the stand-ins below have ComfyUI's class names and module tree (``clip_l.transformer`` = an HF text model
with ComfyUI's layer names), fp16 weights as ComfyUI keeps them."""

import copy
import gc

import pytest
import torch
from torch import nn

from clip_suite.clip_impl.cache import ByteLRUCache
from clip_suite.clip_impl.text.encode import EncodeSettings, encode_chunks, encode_prompt
from clip_suite.clip_impl.clip_skip import LayerChoice
from clip_suite.clip_impl.text.chunking import TokenChunk
from clip_suite.clip_impl.weights.loading import load_clip
from clip_suite.nodes import common
from clip_suite.nodes.hosting import native_text

PROMPT = "a (cat:1.2) in a garden, oil painting BREAK detailed"


def native_model(class_name, **towers):
    """A module shaped like ComfyUI's cond_stage_model: child clip_x with .transformer and .logit_scale."""
    csm = type(class_name, (nn.Module,), {})()
    for name, hf_model in towers.items():
        child = nn.Module()
        child.transformer = copy.deepcopy(hf_model)
        child.logit_scale = nn.Parameter(torch.tensor(4.6055))
        setattr(csm, name, child)
    return csm.half()  # ComfyUI keeps text encoders in fp16


def own_numel(model) -> int:
    return sum(p.numel() for t in model.towers.values() for p in t.parameters())


@pytest.mark.parametrize("clip_skip", [0, 1])
def test_sdxl_native_equals_file(l_model, g_model, model_dir, clip_skip):
    csm = native_model("SDXLClipModel", clip_l=l_model, clip_g=g_model)
    with torch.no_grad():  # ComfyUI leaves this weight uninitialised when a checkpoint lacks it
        csm.clip_l.transformer.text_projection.weight.fill_(float("nan"))
    before = {k: v.clone() for k, v in csm.state_dict().items()}
    assert native_text.check_native(csm) == "sdxl"
    model = native_text.model_from_native(csm)
    assert own_numel(model) == 0  # no second copy: every weight is the native model's
    ref_model = load_clip(model_dir / "sdxl.safetensors")
    settings = EncodeSettings(clip_skip=clip_skip)
    ours = encode_prompt(model, PROMPT, settings, cache=None)
    ref = encode_prompt(ref_model, PROMPT, settings, cache=None)
    assert torch.equal(ours.cond, ref.cond) and torch.equal(ours.pooled, ref.pooled)
    after = csm.state_dict()
    assert all(torch.equal(before[k], after[k], ) or k.endswith("text_projection.weight") for k in before)
    # The native weights as they are at encode time (a LoRA patch written into them by ComfyUI counts).
    with torch.no_grad():
        csm.clip_g.transformer.text_model.encoder.layers[0].mlp.fc1.weight.add_(1.0)
    again = encode_prompt(model, PROMPT, settings, cache=None)
    assert not torch.equal(again.cond, ref.cond)


def test_sd1_native_keeps_values_and_storage(l_model, model_dir):
    csm = native_model("SD1ClipModel", clip_l=l_model)
    model = native_text.model_from_native(csm)
    tower = model.towers["l"]
    assert model.family.name == "sd1" and tower.text_projection is None
    assert csm.clip_l.transformer.text_model.embeddings.token_embedding.weight.dtype == torch.float16
    assert tower.compute_dtype == torch.float32 and tower.device == torch.device("cpu")
    ours = encode_prompt(model, PROMPT, EncodeSettings(clip_skip=1), cache=None)
    ref = encode_prompt(load_clip(model_dir / "sd15.safetensors"), PROMPT, EncodeSettings(clip_skip=1), cache=None)
    assert torch.equal(ours.cond, ref.cond) and torch.equal(ours.pooled, ref.pooled)


def test_embedding_vectors_and_per_use_patches(l_model, model_dir):
    """Embedding vectors replace token rows as on our towers; a host's per-use patch (ComfyUI's lowvram
    ``weight_function``) is applied to the fetched weight, as comfy.ops.cast_bias_weight applies it."""
    csm = native_model("SD1ClipModel", clip_l=l_model)
    tower = native_text.model_from_native(csm).towers["l"]
    ref = load_clip(model_dir / "sd15.safetensors").towers["l"]
    ids = torch.tensor([[49406, 320, 1125, 530, 49407] + [49407] * 72])
    vec = torch.randn(2, 128, generator=torch.Generator().manual_seed(0))
    vectors = [(0, 2, vec[0]), (0, 3, vec[1])]
    a = tower(ids, 3, True, vectors=vectors, project=False)
    b = ref(ids, 3, True, vectors=vectors, project=False)
    assert torch.equal(a.hidden, b.hidden) and torch.equal(a.pooled, b.pooled)
    fc1 = csm.clip_l.transformer.text_model.encoder.layers[1].mlp.fc1
    fc1.weight_function = [lambda w: w * 2]
    patched = tower(ids, 3, True, project=False)
    with torch.no_grad():
        ref.text_model.encoder.layers[1].mlp.fc1.weight.mul_(2)
    expected = ref(ids, 3, True, project=False)
    assert torch.equal(patched.hidden, expected.hidden)
    assert fc1.weight.dtype == torch.float16 and fc1.weight.abs().max() < 100  # the stored weight is untouched


def test_cache_ids_follow_patch_set_and_model_lifetime(l_model):
    csm = native_model("SD1ClipModel", clip_l=l_model)
    a = native_text.model_from_native(csm, patch_key="p1").towers["l"]
    b = native_text.model_from_native(csm, patch_key="p1").towers["l"]
    c = native_text.model_from_native(csm, patch_key="p2").towers["l"]
    assert a.cache_id == b.cache_id != c.cache_id
    cache = ByteLRUCache(1 << 24)
    choice = LayerChoice(layer=4, layer_norm=True, num_layers=4)
    encode_chunks(a, [TokenChunk()], choice, {0}, cache)
    assert len(cache) == 1
    del a, b, c, csm
    gc.collect()
    assert len(cache) == 0  # the native model is gone: so are its cached encodings


def test_refuses_other_text_encoders(l_model):
    with pytest.raises(ValueError, match="FluxClipModel: clip_l, t5xxl.*not an SD1.x, SD2.x or SDXL"):
        native_text.family_of(["clip_l", "t5xxl"], "FluxClipModel")
    with pytest.raises(ValueError, match="StableCascadeClipModel"):
        native_text.family_of(["clip_g"], "StableCascadeClipModel")
    assert native_text.family_of(["clip_g"], "SDXLRefinerClipModel") == "sdxl_refiner"
    csm = native_model("SD1ClipModel", clip_l=l_model).to(torch.float8_e4m3fn)
    with pytest.raises(ValueError, match="float8_e4m3fn weights"):
        native_text.check_native(csm)


def test_layer_note():
    assert common.native_layer_note(None, "sdxl", 0) is None
    assert "(same layer)" in common.native_layer_note(-2, "sdxl", 0)
    note = common.native_layer_note(-2, "sd1", 0)
    assert "CLIPSetLastLayer -2: ignored, clip_skip 0 decides" in note and "would be clip_skip 1" in note
