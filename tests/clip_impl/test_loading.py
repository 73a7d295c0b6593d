"""Loader: layouts and families from keys, only the needed keys read, precisions, sharing, errors."""

import pytest
import torch
from safetensors.torch import save_file

from helpers import tiny_models as tm
from helpers.shared_helpers import spy_on_reads
from clip_suite.clip_impl.weights.loading import load_clip
from clip_suite.clip_impl.weights.files import ModelFileError


@pytest.mark.parametrize(
    "files,arch,towers",
    [
        (["sd15.safetensors"], "sd1", {"l": 4}),
        (["sd15_old.safetensors"], "sd1", {"l": 4}),
        (["sd21.safetensors"], "sd2", {"h": 4}),
        (["sdxl.safetensors"], "sdxl", {"l": 4, "g": 5}),
        (["refiner.safetensors"], "sdxl_refiner", {"g": 5}),
        (["clip_l.safetensors"], "sd1", {"l": 4}),
        (["clip_l.safetensors", "clip_g.safetensors"], "sdxl", {"l": 4, "g": 5}),
        (["clip_g_openclip.safetensors", "clip_l.safetensors"], "sdxl", {"l": 4, "g": 5}),
        (["diffusers_sdxl"], "sdxl", {"l": 4, "g": 5}),
    ],
)
def test_detects_family_from_keys(model_dir, files, arch, towers):
    model = load_clip([model_dir / f for f in files])
    assert model.family.name == arch and model.tower_layers() == towers


def test_reads_only_text_encoder_keys(model_dir, monkeypatch):
    read = spy_on_reads(monkeypatch)
    load_clip(model_dir / "sdxl.safetensors", precision="fp16")
    assert read and all(k.startswith("conditioner.embedders.") for k in read)


def test_auto_precision_rounds_to_fp16_and_computes_fp32(model_dir, tmp_path, l_model):
    sd = tm.hf_state(l_model)
    sd["text_model.final_layer_norm.bias"] = sd["text_model.final_layer_norm.bias"] + 1e-4  # not fp16-exact
    save_file(sd, str(tmp_path / "fp32.safetensors"))
    auto = load_clip(tmp_path / "fp32.safetensors").towers["l"]
    exact = load_clip(tmp_path / "fp32.safetensors", precision="fp32").towers["l"]
    b_auto = auto.text_model.final_layer_norm.bias
    assert b_auto.dtype == torch.float32 and torch.equal(b_auto, sd["text_model.final_layer_norm.bias"].half().float())
    assert torch.equal(exact.text_model.final_layer_norm.bias, sd["text_model.final_layer_norm.bias"])
    bf = load_clip(tmp_path / "fp32.safetensors", precision="bf16").towers["l"]
    assert bf.text_model.final_layer_norm.bias.dtype == torch.bfloat16 and bf.compute_dtype == torch.bfloat16


def test_same_file_twice_shares_weights(model_dir):
    a = load_clip(model_dir / "sdxl.safetensors")
    b = load_clip(model_dir / "sdxl.safetensors")
    assert a.towers["g"] is b.towers["g"]
    c = load_clip(model_dir / "sdxl.safetensors", precision="fp32")
    assert c.towers["g"] is not a.towers["g"]


def test_errors_name_the_file_and_the_fix(model_dir, tmp_path):
    (tmp_path / "empty.safetensors").write_bytes(b"")
    with pytest.raises(ModelFileError, match=r"empty.safetensors is empty"):
        load_clip(tmp_path / "empty.safetensors")
    data = (model_dir / "clip_l.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match=r"cut.safetensors is truncated"):
        load_clip(tmp_path / "cut.safetensors")
    (tmp_path / "text.safetensors").write_text("hello, not a model at all")
    with pytest.raises(ModelFileError, match=r"text.safetensors is not a valid .safetensors file"):
        load_clip(tmp_path / "text.safetensors")
    save_file({"model.diffusion_model.x": torch.zeros(2)}, str(tmp_path / "unet.safetensors"))
    with pytest.raises(ModelFileError, match=r"unet.safetensors: no CLIP text encoder found"):
        load_clip(tmp_path / "unet.safetensors")
    with pytest.raises(ModelFileError, match=r"both hold a CLIP-L"):
        load_clip([model_dir / "sd15_old.safetensors", model_dir / "sd15.safetensors"])
    with pytest.raises(ModelFileError, match=r"does not exist"):
        load_clip(tmp_path / "missing.safetensors")


def test_wrong_depth_for_the_family_is_named(tmp_path):
    # A real-width (1280) CLIP-G with 2 layers instead of 32: built on meta only for the shapes.
    shapes = {
        "conditioner.embedders.1.model.token_embedding.weight": (49408, 1280),
        "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight": (3840, 1280),
        "conditioner.embedders.1.model.transformer.resblocks.1.attn.in_proj_weight": (3840, 1280),
    }
    from clip_suite.clip_impl.weights.text_layouts import find_text_towers
    from clip_suite.clip_impl.weights.loading import _check_shape

    (src,) = find_text_towers(shapes)

    class Reader:
        name = "clip_g.safetensors"

    with pytest.raises(ModelFileError, match=r"clip_g.safetensors has 2 layers; SDXL's CLIP-G encoder needs 32"):
        _check_shape(Reader(), src, "g", "SDXL")


def test_pickle_that_runs_code_is_refused(tmp_path):
    import pickle

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    with open(tmp_path / "evil.ckpt", "wb") as f:
        pickle.dump({"state_dict": Evil()}, f)
    with pytest.raises(ModelFileError, match=r"evil.ckpt contains objects other than weights"):
        load_clip(tmp_path / "evil.ckpt")
    assert not marker.exists()


def test_ckpt_checkpoint_loads(tmp_path, l_model):
    torch.save({"state_dict": tm.hf_state(l_model, "cond_stage_model.transformer.", projection=False)}, tmp_path / "m.ckpt")
    assert load_clip(tmp_path / "m.ckpt").family.name == "sd1"
