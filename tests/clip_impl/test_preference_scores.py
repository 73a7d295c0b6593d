"""Preference scores on random weights in their real file layouts: PickScore's logit (HF CLIPModel folder and
single file), HPS v2's cosine (``.pt`` with OpenCLIP keys under ``state_dict``), the LAION aesthetic heads
(v1 linear, v2 MLP) and truncation that keeps the end-of-text token."""

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

from helpers import tiny_models as tm
from clip_suite.clip_impl.scoring.aesthetic import aesthetic_scores, check_fits, head_from_state_dict, load_head
from clip_suite.clip_impl.weights.loading import load_clip
from clip_suite.clip_impl.images.preprocess import preprocess_images
from clip_suite.clip_impl.scoring.similarity import prepare_prompt, score_images
from clip_suite.clip_impl.tokenizer import BOS_ID, EOS_ID, get_tokenizer
from clip_suite.clip_impl.weights.files import ModelFileError
from helpers.vision_fixtures import v336_model, v_model, vg_model, vh_model, vision_dir  # noqa: F401

PROMPT = "a photo of a red fox sitting in the snow, golden hour"
LONG = ", ".join(f"word{i} fox" for i in range(40))  # far more than 75 tokens
LOGIT_SCALE = float(torch.tensor(math.log(47.25)).half())  # not 100, fp16-exact (the writers store fp16)


def _images(n=5, seed=3):
    return torch.rand(n, 45, 38, 3, generator=torch.Generator().manual_seed(seed))


def _reference_logits(ref, text: str, images) -> torch.Tensor:
    """transformers' CLIPModel.logits_per_image (B,) for [BOS] + the first 75 ids + [EOS]."""
    ids = get_tokenizer().encode(prepare_prompt(text).cleaned)[:75]
    pixels = preprocess_images(images, ref.config.vision_config.image_size)
    with torch.no_grad():
        out = ref(input_ids=torch.tensor([[BOS_ID, *ids, EOS_ID]]), pixel_values=pixels)
    return out.logits_per_image[:, 0]


@pytest.fixture(scope="module")
def pick_files(tmp_path_factory, l_model, v_model):  # noqa: F811
    d = tmp_path_factory.mktemp("pickscore")
    tm.write_hf_clip_folder(d / "PickScore_v1", l_model, v_model, LOGIT_SCALE)
    tm.write_hf_clip(d / "pickscore.safetensors", l_model, v_model, LOGIT_SCALE)
    tm.write_openclip_clip(d / "openclip.safetensors", l_model, v_model, LOGIT_SCALE)
    tm.write_hps_checkpoint(d / "HPS_v2.1_compressed.pt", l_model, v_model, LOGIT_SCALE)
    return d, tm.clip_model(l_model, v_model, LOGIT_SCALE)


@pytest.mark.parametrize("name", ["PickScore_v1", "pickscore.safetensors", "openclip.safetensors", "HPS_v2.1_compressed.pt"])
@pytest.mark.parametrize("text", [PROMPT, LONG])
def test_logit_equals_transformers_logits_per_image(pick_files, name, text):
    d, ref = pick_files
    model = load_clip(d / name, precision="fp32")
    assert model.logit_scale == pytest.approx(LOGIT_SCALE, abs=1e-6)
    images = _images()
    got = torch.tensor(score_images(model, images, text, "logit").scores)
    want = _reference_logits(ref, text, images)
    rel = ((got - want).abs() / want.abs().clamp_min(1e-6)).max().item()
    assert rel <= 1e-4, f"{name}: max rel. diff {rel:.2e} (ours {got.tolist()}, transformers {want.tolist()})"


def test_pickscore_probabilities_are_the_batch_softmax(pick_files):
    d, ref = pick_files
    images = _images(4, seed=7)
    result = score_images(load_clip(d / "PickScore_v1", precision="fp32"), images, PROMPT, "logit")
    want = torch.softmax(_reference_logits(ref, PROMPT, images).double(), dim=0)
    assert torch.allclose(torch.tensor(result.probabilities, dtype=torch.float64), want, atol=1e-5)
    assert sum(result.probabilities) == pytest.approx(1.0)
    for line, p in zip(result.report.splitlines()[2:6], result.probabilities):
        assert f"softmax {p:.4f}" in line
    assert "47.25 (the model's logit_scale)" in result.report
    assert score_images(load_clip(d / "PickScore_v1"), images, PROMPT, "cosine").probabilities is None


def test_hps_pt_gives_the_cosine_of_the_same_weights_in_hf_layout(pick_files):
    """HPS v2's score is image_features @ text_features.T of the normalised features: the cosine."""
    d, ref = pick_files
    images = _images()
    got = torch.tensor(score_images(load_clip(d / "HPS_v2.1_compressed.pt"), images, PROMPT, "cosine").scores)
    hf = torch.tensor(score_images(load_clip(d / "PickScore_v1"), images, PROMPT, "cosine").scores)
    want = _reference_logits(ref, PROMPT, images) / math.exp(LOGIT_SCALE)
    assert (got - want).abs().max().item() <= 1e-5 and (got - hf).abs().max().item() <= 1e-5


def test_a_pair_has_no_logit_scale_and_uses_100(vision_dir):  # noqa: F811
    model = load_clip([vision_dir / "clip_l.safetensors", vision_dir / "clip_vision_l.safetensors"])
    result = score_images(model, _images(2), PROMPT, "logit")
    assert result.scores == pytest.approx([100 * c for c in result.cosines], rel=1e-6)
    assert "holds no logit_scale: 100 is used" in result.report


def test_truncation_keeps_the_end_of_text_token():
    prompt = prepare_prompt(LONG)
    assert prompt.truncated and len(prompt.ids) == 75 and EOS_ID not in prompt.ids
    assert not prepare_prompt(PROMPT).truncated
    # The pooled vector is read at the EOS appended after the 75 ids: the equality with transformers on
    # [BOS] + 75 ids + [EOS] above (LONG) shows it; a row without EOS would pool at a word instead.


# ------------------------------------------------------------------------------------------ aesthetic heads
def _v1_reference(width, seed=0):
    torch.manual_seed(seed)
    return nn.Linear(width, 1).eval()


class _ImprovedMLP(nn.Module):
    """The improved predictor's MLP as its inference code builds it: ``self.layers``, no activations, Dropout
    (inactive in eval) at the odd indexes, so the file's keys are layers.0/2/4/6/7."""

    def __init__(self, width):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(width, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
            nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1),
        )

    def forward(self, x):
        return self.layers(x)


def _v2_reference(width=768, seed=0):
    torch.manual_seed(seed)
    return _ImprovedMLP(width).eval()


@pytest.fixture(scope="module")
def aesthetic_files(tmp_path_factory):
    """Tiny full CLIPs whose image embeddings are 512 (ViT-B/32's) and 768 (ViT-L/14's) wide, and heads."""
    d = tmp_path_factory.mktemp("aesthetic")
    models = {}
    for width in (512, 768):
        t = tm.text_model(128, 1, "quick_gelu", projection=width, seed=width)
        v = tm.vision_model(128, 2, 8, 32, projection=width, seed=width + 1)
        tm.write_hf_clip(d / f"clip_{width}.safetensors", t, v)
        models[width] = v
    heads = {
        "sa_0_4_vit_b_32_linear.pth": _v1_reference(512),
        "sa_0_4_vit_l_14_linear.pth": _v1_reference(768, seed=1),
        "sac+logos+ava1-l14-linearMSE.pth": _v2_reference(768, seed=2),
    }
    for name, module in heads.items():
        torch.save(module.state_dict(), d / name)  # as the projects ship them: a bare state dict
    save_file({k: v.contiguous() for k, v in heads["sac+logos+ava1-l14-linearMSE.pth"].state_dict().items()},
              d / "improved_v2.safetensors")
    torch.save({"state_dict": heads["sa_0_4_vit_l_14_linear.pth"].state_dict()}, d / "wrapped_v1.pt")
    return d, models, heads


@pytest.mark.parametrize(
    "head_file,ref_name,width",
    [
        ("sa_0_4_vit_b_32_linear.pth", "sa_0_4_vit_b_32_linear.pth", 512),
        ("sa_0_4_vit_l_14_linear.pth", "sa_0_4_vit_l_14_linear.pth", 768),
        ("wrapped_v1.pt", "sa_0_4_vit_l_14_linear.pth", 768),
        ("sac+logos+ava1-l14-linearMSE.pth", "sac+logos+ava1-l14-linearMSE.pth", 768),
        ("improved_v2.safetensors", "sac+logos+ava1-l14-linearMSE.pth", 768),
    ],
)
def test_aesthetic_heads_equal_the_reference_formula(aesthetic_files, head_file, ref_name, width):
    d, vmodels, heads = aesthetic_files
    head = load_head(d / head_file)
    assert head.kind == ("v2 MLP" if "linearMSE" in ref_name else "v1 linear") and head.input_width == width
    model = load_clip(d / f"clip_{width}.safetensors", precision="fp32")
    images = _images(6)
    got = torch.tensor(aesthetic_scores(model, head, images, batch_size=4).scores)
    vmodel = vmodels[width]
    with torch.no_grad():
        embeds = vmodel(pixel_values=preprocess_images(images, vmodel.config.image_size)).image_embeds
        want = heads[ref_name](F.normalize(embeds, dim=-1))[:, 0]  # head(normalize(image_embeds))
    assert (got - want).abs().max().item() <= 1e-5, f"max diff {(got - want).abs().max().item():.2e}"


def test_a_768_head_on_a_512_tower_is_refused_naming_both(aesthetic_files):
    d, _, _ = aesthetic_files
    model = load_clip(d / "clip_512.safetensors")
    head = load_head(d / "sac+logos+ava1-l14-linearMSE.pth")
    with pytest.raises(ValueError) as e:
        aesthetic_scores(model, head, _images(1))
    msg = str(e.value)
    assert "768-wide" in msg and "512-wide" in msg and "sac+logos+ava1-l14-linearMSE.pth" in msg
    assert "clip_512.safetensors" in msg
    check_fits(load_head(d / "sa_0_4_vit_b_32_linear.pth"), model.vision)  # the matching head passes


@pytest.mark.parametrize(
    "sd,message",
    [
        ({"fc.weight": torch.zeros(1, 8)}, "unexpected key 'fc.weight'"),
        ({"weight": torch.zeros(2, 8), "bias": torch.zeros(2)}, "gives 2 outputs"),
        ({"layers.0.weight": torch.zeros(4, 8), "layers.0.bias": torch.zeros(4),
          "layers.2.weight": torch.zeros(1, 5), "layers.2.bias": torch.zeros(1)}, "takes 5 inputs"),
        ({"weight": torch.full((1, 8), float("nan")), "bias": torch.zeros(1)}, "NaN"),
    ],
)
def test_bad_heads_are_refused(sd, message):
    with pytest.raises(ModelFileError, match=message):
        head_from_state_dict(sd, "x.pth")


def test_head_file_types(tmp_path):
    (tmp_path / "head.onnx").write_bytes(b"x")
    with pytest.raises(ModelFileError, match="unknown file type"):
        load_head(tmp_path / "head.onnx")
    with pytest.raises(ModelFileError, match="not found"):
        load_head(tmp_path / "missing.pth")


# ------------------------------------------------------------------------------------------ HPS v2 letterbox
def test_letterbox_is_hps_v2_preprocessing():
    """HPSv2's preprocess_val: ToTensor, long side to 224 (torchvision resize on a tensor = bicubic antialiased
    interpolate, round(side * scale)), zero padding pad//2 left/top, then CLIP's normalisation."""
    from clip_suite.clip_impl.images.letterbox import letterbox_images
    from clip_suite.clip_impl.images.preprocess import CLIP_MEAN, CLIP_STD

    image = torch.rand(1, 40, 64, 3, generator=torch.Generator().manual_seed(1))  # H 40, W 64
    got = letterbox_images(image, 32)
    assert got.shape == (1, 3, 32, 32)
    mean, std = torch.tensor(CLIP_MEAN).view(3, 1, 1), torch.tensor(CLIP_STD).view(3, 1, 1)
    inner = F.interpolate(image.permute(0, 3, 1, 2), size=(20, 32), mode="bicubic", antialias=True)[0]
    assert torch.allclose(got[0, :, 6:26], (inner - mean) / std, atol=1e-6)  # 12 rows of padding: 6 above
    black = (-mean / std).expand(3, 6, 32)
    assert torch.allclose(got[0, :, :6], black) and torch.allclose(got[0, :, 26:], black)
    square = torch.rand(2, 48, 48, 3, generator=torch.Generator().manual_seed(2))
    # A square image is only resized (no bars); CLIP's centre-crop path resizes the same way but then clips
    # to 0..1 and rounds to 8 bits, which HPS v2 does not.
    resized = F.interpolate(square.permute(0, 3, 1, 2), size=(32, 32), mode="bicubic", antialias=True)
    assert torch.allclose(letterbox_images(square, 32), (resized - mean) / std, atol=1e-6)


def test_cli_fit_pad_scores_hps_with_its_preprocessing(pick_files, tmp_path, capsys):
    import csv
    import io

    import numpy as np
    from PIL import Image

    from clip_suite.cli import main
    from clip_suite.clip_impl.images.letterbox import letterbox_images
    from clip_suite.clip_impl.images.preprocess import load_image_file

    d, ref = pick_files
    path = tmp_path / "wide.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (40, 70, 3), dtype=np.uint8)).save(path)
    assert main(["score", "--model", str(d / "HPS_v2.1_compressed.pt"), "--prompt", PROMPT, "--scale", "cosine",
                 "--fit", "pad", "--precision", "fp32", "--out", "-", str(path)]) == 0
    got = float(next(csv.DictReader(io.StringIO(capsys.readouterr().out)))["score"])
    ids = get_tokenizer().encode(PROMPT)
    with torch.no_grad():
        out = ref(input_ids=torch.tensor([[BOS_ID, *ids, EOS_ID]]), pixel_values=letterbox_images(load_image_file(path), 32))
    want = float(out.logits_per_image[0, 0]) / math.exp(LOGIT_SCALE)
    assert got == pytest.approx(want, abs=1e-5)
