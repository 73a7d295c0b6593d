"""Vision towers: detection from keys, presets, parity with transformers, pairing with text towers, errors."""

import pytest
import torch
import torch.nn.functional as F

from helpers import tiny_models as tm
from helpers.shared_helpers import spy_on_reads
from clip_suite.clip_impl.weights.text_layouts import TowerSource
from clip_suite.clip_impl.weights.loading import _assign, load_clip
from clip_suite.clip_impl.images.preprocess import preprocess_images
from clip_suite.clip_impl.weights.vision import VisionSource, _pair, find_vision_sources
from clip_suite.clip_impl.towers.vision import VISION_PRESETS, VIT_BIGG_14, VIT_L_14_336
from clip_suite.clip_impl.weights.files import ModelFileError
from helpers.vision_fixtures import v336_model, v_model, vg_model, vh_model, vision_dir  # noqa: F401

TOL = 1e-5


def _pixels(size, n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return preprocess_images(torch.rand(n, size + 9, size + 20, 3, generator=g), size)


@pytest.mark.parametrize(
    "files,ref,family,layout",
    [
        (["clip_hf.safetensors"], "v_model", "clip", "hf"),
        (["clip_openclip.safetensors"], "v_model", "clip", "openclip"),
        (["clip_hf_336.safetensors"], "v336_model", "clip", "hf"),
        (["clip_l.safetensors", "clip_vision_l.safetensors"], "v_model", "sd1", "hf"),
        (["clip_vision_l_openclip.safetensors", "clip_l.safetensors"], "v_model", "sd1", "openclip"),
        (["clip_h_folder"], "vh_model", "clip", "hf"),
        (["sdxl.safetensors", "clip_vision_g.safetensors"], "vg_model", "sdxl", "hf"),
        (["sd21_unclip.safetensors"], "vh_model", "sd2", "openclip"),
    ],
)
def test_image_embeddings_equal_transformers(vision_dir, request, files, ref, family, layout):
    """Every layout loads to the same tower as transformers' CLIPVisionModelWithProjection (fp32)."""
    reference = request.getfixturevalue(ref)
    model = load_clip([vision_dir / f for f in files], precision="fp32")
    assert model.family.name == family
    size = reference.config.image_size
    assert model.vision.config.image_size == size and model.vision.config.patch == reference.config.patch_size
    pixels = _pixels(size)
    with torch.no_grad():
        want = reference(pixel_values=pixels).image_embeds
    got = model.vision(pixels)
    assert got.shape == want.shape
    assert (got - want).abs().max().item() <= TOL


def test_auto_precision_matches_too(vision_dir, v_model):
    model = load_clip(vision_dir / "clip_hf.safetensors")  # fp16-rounded weights, fp32 compute
    pixels = _pixels(32)
    with torch.no_grad():
        want = v_model(pixel_values=pixels).image_embeds
    assert model.vision.vision_model.pre_layrnorm.weight.dtype == torch.float32
    assert (model.vision(pixels) - want).abs().max().item() <= TOL


def test_activation_comes_from_config_json(vision_dir, vh_model):
    """The folder's config.json says gelu; the same weights as a bare file are read as quick_gelu."""
    model = load_clip(vision_dir / "clip_h_folder", precision="fp32")
    assert model.vision.config.activation == "gelu" and model.towers["l"].config.activation == "gelu"


@pytest.mark.parametrize("preset", VISION_PRESETS, ids=lambda p: p.name)
@pytest.mark.parametrize("layout", ["hf", "openclip"])
def test_presets_detected_from_shapes(preset, layout):
    """Real sizes (shapes only, no tensors): patch from the conv, image size from the positions."""
    c, n, p = preset.width, preset.positions, preset.patch
    if layout == "hf":
        v = "vision_model."
        shapes = {
            v + "embeddings.class_embedding": (c,),
            v + "embeddings.patch_embedding.weight": (c, 3, p, p),
            v + "embeddings.position_embedding.weight": (n, c),
            "visual_projection.weight": (preset.projection_dim, c),
        }
        for i in range(preset.layers):
            shapes[f"{v}encoder.layers.{i}.self_attn.q_proj.weight"] = (c, c)
            shapes[f"{v}encoder.layers.{i}.mlp.fc1.weight"] = (preset.mlp_width, c)
    else:
        v = "visual."
        shapes = {
            v + "class_embedding": (c,),
            v + "conv1.weight": (c, 3, p, p),
            v + "positional_embedding": (n, c),
            v + "proj": (c, preset.projection_dim),
        }
        for i in range(preset.layers):
            shapes[f"{v}transformer.resblocks.{i}.attn.in_proj_weight"] = (3 * c, c)
            shapes[f"{v}transformer.resblocks.{i}.mlp.c_fc.weight"] = (preset.mlp_width, c)
    (src,) = find_vision_sources(shapes)
    assert src.config() == preset


def test_presets_match_comfyui_configs():
    """Sizes ComfyUI's clip_vision configs give (comfy/clip_vision_config_{g,vitl_336}.json)."""
    assert (VIT_BIGG_14.width, VIT_BIGG_14.layers, VIT_BIGG_14.mlp_width, VIT_BIGG_14.heads) == (1664, 48, 8192, 16)
    assert (VIT_BIGG_14.projection_dim, VIT_BIGG_14.activation) == (1280, "gelu")
    assert (VIT_L_14_336.image_size, VIT_L_14_336.positions, VIT_L_14_336.activation) == (336, 577, "quick_gelu")


def test_pairing_records_the_text_tower(vision_dir):
    # A tiny CLIP-G alone is too narrow to be placed and loads as one SD1.x-style tower (the real one,
    # 1280 wide, is the SDXL refiner's); the pair keeps that text family.
    model = load_clip([vision_dir / "clip_g.safetensors", vision_dir / "clip_vision_g.safetensors"])
    assert model.extra["vision_text"] == "l" and model.family.name == "sd1"
    model = load_clip([vision_dir / "sdxl.safetensors", vision_dir / "clip_vision_g.safetensors"])
    assert model.extra["vision_text"] == "g" and model.family.name == "sdxl"
    model = load_clip(vision_dir / "sd21_unclip.safetensors")
    assert model.extra["vision_text"] == "h" and model.family.name == "sd2"  # unCLIP stays an SD2.x model


def test_full_openclip_h_keeps_its_tower_role():
    """A full OpenCLIP ViT-H (text 1024 wide, role h) is the clip family with tower h."""
    src = TowerSource("openclip", "", "h", 1024, 24, True, 1024)
    family, assignment = _assign([("reader", src)], "auto", True)
    assert family.name == "clip" and family.towers == ("h",) and family.pooled_tower == "h"
    assert assignment["h"] == ("reader", src)


def test_reads_only_the_towers(vision_dir, monkeypatch):
    read = spy_on_reads(monkeypatch)
    load_clip(vision_dir / "clip_hf.safetensors", precision="fp16")
    assert read and "logit_scale" not in read and "vision_model.embeddings.position_ids" not in read
    assert any(k.startswith("vision_model.") for k in read) and "visual_projection.weight" in read


def test_same_file_twice_shares_the_vision_tower(vision_dir):
    a = load_clip(vision_dir / "clip_hf.safetensors")
    b = load_clip(vision_dir / "clip_hf.safetensors")
    assert a.vision is b.vision and a.towers["l"] is b.towers["l"]
    pair = [vision_dir / "clip_l.safetensors", vision_dir / "clip_vision_l.safetensors"]
    assert load_clip(pair).vision is load_clip(pair).vision


def test_with_vision_modes(vision_dir):
    assert load_clip(vision_dir / "sd15.safetensors").vision is None  # auto: none there, none loaded
    text_only = load_clip(vision_dir / "clip_hf.safetensors", with_vision=False)
    assert text_only.vision is None and text_only.family.name == "sd1"
    with pytest.raises(ModelFileError, match="no CLIP vision tower.*clip_vision"):
        load_clip(vision_dir / "sd15.safetensors", with_vision=True)


def _message(excinfo) -> str:
    return str(excinfo.value)


def test_error_mismatched_pair_names_both_files(vision_dir):
    with pytest.raises(ModelFileError) as e:
        load_clip([vision_dir / "clip_g.safetensors", vision_dir / "clip_vision_l.safetensors"])
    msg = _message(e)
    assert "clip_g.safetensors" in msg and "clip_vision_l.safetensors" in msg and "not the same CLIP" in msg
    assert "projection 96" in msg and "projection 64" in msg


@pytest.mark.parametrize("text_file", ["sd15.safetensors", "sdxl.safetensors"])
def test_error_text_without_projection(vision_dir, text_file):
    """SD checkpoints drop CLIP-L's text_projection: the message says so (SDXL's CLIP-G does not match)."""
    with pytest.raises(ModelFileError) as e:
        load_clip([vision_dir / text_file, vision_dir / "clip_vision_l.safetensors"])
    msg = _message(e)
    assert text_file in msg and "clip_vision_l.safetensors" in msg
    assert "no text_projection" in msg and "checkpoints drop CLIP-L's text_projection" in msg


def test_error_known_widths_of_different_clips():
    """Known sizes that belong to different CLIPs are refused even when the projections agree."""

    class Reader:
        name = "clip_h.safetensors"

    text = TowerSource("openclip", "", "h", 1024, 24, True, 1024)
    vision = VisionSource("hf", "", 1664, 48, 8192, 14, 224, 1024)  # bigG width, H-sized projection
    with pytest.raises(ModelFileError, match="clip_h.safetensors.*not the same CLIP"):
        _pair(object(), vision, "clip_vision_g.safetensors", [(Reader(), text)])
    ok = VisionSource("hf", "", 1280, 32, 5120, 14, 224, 1024)
    assert _pair(object(), ok, "clip_vision_h.safetensors", [(Reader(), text)])[1] is text


def test_error_vision_only_no_projection_two_towers(vision_dir):
    with pytest.raises(ModelFileError, match="vision tower but no text encoder"):
        load_clip(vision_dir / "clip_vision_l.safetensors")
    with pytest.raises(ModelFileError, match="no visual_projection"):
        load_clip([vision_dir / "clip_l.safetensors", vision_dir / "clip_vision_noproj.safetensors"])
    with pytest.raises(ModelFileError, match="two vision towers"):
        load_clip([vision_dir / "clip_hf.safetensors", vision_dir / "clip_vision_l.safetensors"])


def test_corrupt_vision_weights_are_refused(tmp_path, v_model, l_model):
    sd = tm.hf_vision_state(v_model)
    sd["vision_model.post_layernorm.weight"][0] = float("nan")
    tm.save(tmp_path / "bad_vision.safetensors", sd)
    tm.save(tmp_path / "clip_l.safetensors", tm.hf_state(l_model))
    with pytest.raises(ModelFileError, match="bad_vision.safetensors.*NaN"):
        load_clip([tmp_path / "clip_l.safetensors", tmp_path / "bad_vision.safetensors"])


def test_pixels_of_the_wrong_size_are_refused(vision_dir):
    model = load_clip(vision_dir / "clip_hf.safetensors")
    with pytest.raises(ValueError, match=r"\(B, 3, 32, 32\).*preprocess"):
        model.vision(torch.zeros(1, 3, 48, 48))


def test_projected_embeddings_are_the_pooled_output_projected(vision_dir, v_model):
    model = load_clip(vision_dir / "clip_hf.safetensors", precision="fp32")
    pixels = _pixels(32, n=2)
    pooled = model.vision(pixels, project=False)
    with torch.no_grad():
        ref = v_model.vision_model(pixel_values=pixels).pooler_output
    assert (pooled - ref).abs().max().item() <= TOL
    assert torch.allclose(F.linear(pooled, model.vision.visual_projection.weight), model.vision(pixels), atol=1e-6)


@pytest.mark.parametrize("files,want", [
    (["clip_hf.safetensors"], 4.6052),
    (["clip_openclip.safetensors"], 4.6052),
    (["clip_h_folder"], 4.6052),
    (["clip_l.safetensors", "clip_vision_l.safetensors"], None),  # a pair has no logit_scale
])
def test_logit_scale_read_from_full_clips(vision_dir, files, want):
    from clip_suite.clip_impl.scoring.similarity import DEFAULT_LOGIT_FACTOR, logit_factor

    model = load_clip([vision_dir / f for f in files])
    if want is None:
        assert model.logit_scale is None and logit_factor(model)[0] == DEFAULT_LOGIT_FACTOR
    else:
        stored = torch.tensor(want).half().float()  # tiny_models saves fp16 tensors
        assert model.logit_scale == pytest.approx(stored.item(), abs=1e-7)
        assert logit_factor(model)[0] == pytest.approx(stored.exp().item(), rel=1e-6)
