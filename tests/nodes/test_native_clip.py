"""Converting ComfyUI's own CLIP object (its cond_stage_model) into our towers, without ComfyUI: the
stand-ins below have ComfyUI's class names and module tree (``clip_l.transformer`` = an HF text model)."""

import copy

import pytest
import torch
from torch import nn

from clip_suite.clip_impl.encode import EncodeSettings, encode_prompt
from clip_suite.clip_impl.loading import load_clip
from clip_suite.nodes import native_clip

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


@pytest.mark.parametrize("clip_skip", [0, 1])
def test_sdxl_native_equals_file(l_model, g_model, model_dir, clip_skip):
    csm = native_model("SDXLClipModel", clip_l=l_model, clip_g=g_model)
    with torch.no_grad():  # ComfyUI leaves this weight uninitialised when a checkpoint lacks it
        csm.clip_l.transformer.text_projection.weight.fill_(float("nan"))
    before = {k: v.clone() for k, v in csm.state_dict().items()}
    assert native_clip.check_native(csm) == "sdxl"
    model = native_clip.model_from_native(csm)
    ref_model = load_clip(model_dir / "sdxl.safetensors")
    settings = EncodeSettings(clip_skip=clip_skip)
    ours = encode_prompt(model, PROMPT, settings, cache=None)
    ref = encode_prompt(ref_model, PROMPT, settings, cache=None)
    assert torch.equal(ours.cond, ref.cond) and torch.equal(ours.pooled, ref.pooled)
    after = csm.state_dict()
    assert all(torch.equal(before[k], after[k], ) or k.endswith("text_projection.weight") for k in before)
    # Copies, never views: changing the native weights (as a LoRA patch does) leaves ours alone.
    with torch.no_grad():
        csm.clip_g.transformer.text_model.encoder.layers[0].mlp.fc1.weight.add_(1.0)
    again = encode_prompt(model, PROMPT, settings, cache=None)
    assert torch.equal(again.cond, ref.cond)


def test_sd1_native_keeps_values_and_storage(l_model, model_dir):
    csm = native_model("SD1ClipModel", clip_l=l_model)
    model = native_clip.model_from_native(csm, storage_dtype=torch.float16)
    tower = model.towers["l"]
    assert model.family.name == "sd1" and tower.text_projection is None
    assert tower.text_model.embeddings.token_embedding.weight.dtype == torch.float16
    assert tower.compute_dtype == torch.float32
    ours = encode_prompt(model, PROMPT, EncodeSettings(clip_skip=1), cache=None)
    ref = encode_prompt(load_clip(model_dir / "sd15.safetensors"), PROMPT, EncodeSettings(clip_skip=1), cache=None)
    assert torch.equal(ours.cond, ref.cond) and torch.equal(ours.pooled, ref.pooled)


def test_refuses_other_text_encoders(l_model):
    with pytest.raises(ValueError, match="FluxClipModel: clip_l, t5xxl.*not an SD1.x, SD2.x or SDXL"):
        native_clip.family_of(["clip_l", "t5xxl"], "FluxClipModel")
    with pytest.raises(ValueError, match="StableCascadeClipModel"):
        native_clip.family_of(["clip_g"], "StableCascadeClipModel")
    assert native_clip.family_of(["clip_g"], "SDXLRefinerClipModel") == "sdxl_refiner"
    csm = native_model("SD1ClipModel", clip_l=l_model).to(torch.float8_e4m3fn)
    with pytest.raises(ValueError, match="float8_e4m3fn weights"):
        native_clip.check_native(csm)


def test_layer_note():
    assert native_clip.native_layer_note(None, "sdxl", 0) is None
    assert "(same layer)" in native_clip.native_layer_note(-2, "sdxl", 0)
    note = native_clip.native_layer_note(-2, "sd1", 0)
    assert "CLIPSetLastLayer -2: ignored, clip_skip 0 decides" in note and "would be clip_skip 1" in note
