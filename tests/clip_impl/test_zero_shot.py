"""Zero-shot classification equals transformers' CLIPModel (HF and OpenCLIP layouts, ViT-B/32 and ViT-L/14
shapes, one template and three ensembled), through the library, the node and the ``classify`` CLI; label
and template rules; the text cache."""

import csv
import os

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import full_clip_models as fcm
from clip_suite.cli import main
from clip_suite.clip_impl.cache import ByteLRUCache
from clip_suite.clip_impl.weights.loading import load_clip
from clip_suite.clip_impl.images.preprocess import load_image_file
from clip_suite.clip_impl.scoring.zero_shot import (
    classify_images,
    label_embeddings,
    parse_labels,
    parse_templates,
)
from clip_suite.nodes import NODE_CLASS_MAPPINGS as NODES
from clip_suite.nodes import host

TOL = 1e-4  # per probability (the bound)
LABELS = ["portrait", "landscape", "anime", "a red umbrella", "photo"]
TEMPLATES = {
    "one": ["a photo of {}."],
    "three": ["a photo of {}.", "a drawing of {}.", "{}, digital art"],
}


@pytest.fixture(scope="module", params=sorted(fcm.SHAPES))
def clip_files(request, tmp_path_factory):
    """(shape, CLIPModel, models folder with the full CLIP in both layouts and as a text + clip_vision pair)."""
    model = fcm.clip_model(request.param, seed=7 if "B" in request.param else 8)
    root = tmp_path_factory.mktemp("zero_shot_models")
    for folder in ("checkpoints", "text_encoders", "clip_vision"):
        (root / folder).mkdir()
    fcm.write_full(root / "checkpoints" / "clip_hf.safetensors", model, "hf")
    fcm.write_full(root / "checkpoints" / "clip_openclip.safetensors", model, "openclip")
    fcm.write_pair(root / "text_encoders" / "text.safetensors", root / "clip_vision" / "vision.safetensors", model)
    return request.param, model, root


@pytest.fixture()
def models_host(clip_files):
    previous = host.set_host(host.StandaloneHost(clip_files[2]))
    yield
    host.set_host(previous)


def _images(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.rand(70, 60, 3, generator=g) for _ in range(n)])


def _load(model, model_2="none"):
    return NODES["ClipSuiteLoader"]().load(model, model_2, "auto", "auto", "cpu")["result"][0]


def _max_diff(a, b) -> float:
    return (torch.as_tensor(a, dtype=torch.float64) - torch.as_tensor(b, dtype=torch.float64)).abs().max().item()


@pytest.mark.parametrize("layout", ["hf", "openclip"])
@pytest.mark.parametrize("templates", sorted(TEMPLATES))
def test_library_and_node_equal_transformers(clip_files, models_host, layout, templates):
    shape, ref_model, root = clip_files
    temps = TEMPLATES[templates]
    images = _images()
    want = fcm.reference_probabilities(ref_model, images, LABELS, temps)
    if templates == "one":  # the hand-made reference is transformers' own forward pass
        own = fcm.reference_logits_per_image(ref_model, images, [temps[0].replace("{}", x) for x in LABELS])
        assert _max_diff(want, own) <= 1e-6
    assert want.max().item() > 0.5, "random weights chosen so that the labels are far from uniform"

    model = load_clip([root / "checkpoints" / f"clip_{layout}.safetensors"], precision="fp32")
    result = classify_images(model, images, LABELS, temps, batch_size=4, cache=None)
    diff = _max_diff(result.probabilities, want)
    assert diff <= TOL, f"{shape} {layout} {templates}: max |ours - transformers| = {diff:.2e}"
    assert result.factor == pytest.approx(np.exp(fcm.LOGIT_SCALE), rel=1e-6)

    clip = _load(f"checkpoints/clip_{layout}.safetensors")
    out = NODES["ClipSuiteZeroShot"]().classify(clip, images, "\n".join(LABELS), " | ".join(temps))
    label, prob, index, report = out["result"]
    best = want.argmax(dim=-1).tolist()
    assert index == best and label == [LABELS[i] for i in best]
    assert _max_diff(prob, want.max(dim=-1).values) <= TOL
    assert out["ui"]["text"] == [report]
    assert f"{len(images)} images, {len(LABELS)} labels, {len(temps)} template" in report
    assert "the model's logit_scale" in report
    rows = [line for line in report.splitlines() if line.startswith("  #")]
    assert len(rows) == len(images) and all(row.count(", ") == 2 for row in rows), "top 3 labels per image"


def test_text_encoder_and_clip_vision_pair_use_100(clip_files, models_host):
    _shape, ref_model, _root = clip_files
    images = _images(3, seed=1)
    want = fcm.reference_probabilities(ref_model, images, LABELS, TEMPLATES["three"], factor=100.0)
    clip = _load("text_encoders/text.safetensors", "clip_vision/vision.safetensors")
    label, prob, index, report = NODES["ClipSuiteZeroShot"]().classify(
        clip, images, "\n".join(LABELS), " | ".join(TEMPLATES["three"])
    )["result"]
    assert index == want.argmax(dim=-1).tolist()
    assert _max_diff(prob, want.max(dim=-1).values) <= TOL
    assert "100 (the files hold no logit_scale)" in report


@pytest.mark.parametrize("layout", ["hf", "openclip"])
def test_classify_cli_equals_transformers(clip_files, tmp_path, layout):
    shape, ref_model, root = clip_files
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(3)
    for i in range(5):
        where = folder / ("sub" if i % 2 else "") / f"img_{i}.png"
        Image.fromarray(rng.integers(0, 256, (40 + i, 50, 3), dtype=np.uint8)).save(where)
    (folder / "broken.png").write_bytes(b"not a png")
    (folder / "notes.txt").write_text("skipped")
    out = tmp_path / "labels.csv"
    temps = TEMPLATES["three"]
    code = main(["classify", "--model", str(root / "checkpoints" / f"clip_{layout}.safetensors"),
                 "--labels", ", ".join(LABELS), "--template", " | ".join(temps), "--top", "2",
                 "--batch-size", "2", "--precision", "fp32", "--out", str(out), str(folder)])
    assert code == 0
    rows = list(csv.DictReader(out.open(newline="", encoding="utf-8")))
    assert list(rows[0]) == ["path", "label", "probability", "top_k", "error"] and len(rows) == 6
    for row in rows:
        if row["path"].endswith("broken.png"):
            assert row["label"] == "" and "not an image" in row["error"]
            continue
        want = fcm.reference_probabilities(ref_model, load_image_file(row["path"]), LABELS, temps)[0]
        order = want.argsort(descending=True).tolist()
        assert row["label"] == LABELS[order[0]] and row["error"] == ""
        assert abs(float(row["probability"]) - want[order[0]].item()) <= TOL, shape
        top = [item.rsplit(":", 1) for item in row["top_k"].split(";")]
        assert [name for name, _ in top] == [LABELS[j] for j in order[:2]]
        assert all(abs(float(p) - want[j].item()) <= TOL for (_, p), j in zip(top, order))


def test_classify_cli_summary_and_labels_file(clip_files, tmp_path, capsys):
    _shape, _ref, root = clip_files
    img = tmp_path / "one.png"
    Image.fromarray(np.full((32, 32, 3), 200, dtype=np.uint8)).save(img)
    labels = tmp_path / "labels.txt"
    labels.write_text("\n  cat \n\ndog\n", encoding="utf-8")
    out = tmp_path / "o.csv"
    assert main(["classify", "--model", str(root / "checkpoints" / "clip_hf.safetensors"), "--labels-file",
                 str(labels), "--out", str(out), str(img)]) == 0
    line = capsys.readouterr().out
    assert "classified 1 of 1 image: " in line and ("cat 1, dog 0" in line or "dog 1, cat 0" in line)
    assert "the model's logit_scale" in line


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--labels", "cat"], "at least 2 labels"),
        (["--labels", "cat, ,  "], "at least 2 labels"),
        (["--labels", "cat,dog,Cat"], "'Cat' is given twice"),
        (["--labels", "cat,dog", "--template", "a photo"], "has no {} where the label goes"),
        (["--labels-file", "/nonexistent/labels.txt"], "cannot read it"),
    ],
)
def test_classify_cli_bad_arguments(clip_files, tmp_path, capsys, argv, message):
    _shape, _ref, root = clip_files
    img = tmp_path / "one.png"
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(img)
    code = main(["classify", "--model", str(root / "checkpoints" / "clip_hf.safetensors"), *argv,
                 "--out", str(tmp_path / "o.csv"), str(img)])
    assert code == 2 and message in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "o.csv"), "bad arguments are refused before any output is written"


def test_label_and_template_rules():
    assert parse_labels("  portrait \n\n landscape\n\t\n anime  ") == ["portrait", "landscape", "anime"]
    assert parse_labels("a, b ,c", ",") == ["a", "b", "c"]
    assert parse_templates("a photo of {}. | a drawing of {}.") == ["a photo of {}.", "a drawing of {}."]
    assert parse_templates("{} |") == ["{}"]
    for text in ("", "\n \n", "only one"):
        with pytest.raises(ValueError, match="at least 2 labels"):
            parse_labels(text)
    with pytest.raises(ValueError, match="'template' has no {}|has no {} where"):
        parse_templates("a photo of {}. | template")
    with pytest.raises(ValueError, match="template is empty"):
        parse_templates(" | ")


def test_node_refuses_bad_labels_and_templates(clip_files, models_host):
    clip = _load("checkpoints/clip_hf.safetensors")
    node = NODES["ClipSuiteZeroShot"]()
    with pytest.raises(ValueError, match="at least 2 labels.*found only 'cat'"):
        node.classify(clip, _images(1), "cat\n\n", "a photo of {}.")
    with pytest.raises(ValueError, match="template 'a photo' has no {}"):
        node.classify(clip, _images(1), "cat\ndog", "a photo")


def test_label_embeddings_are_cached_per_label_and_template(clip_files):
    _shape, _ref, root = clip_files
    model = load_clip(root / "checkpoints" / "clip_hf.safetensors")
    cache = ByteLRUCache(1 << 20)
    first, _ = label_embeddings(model, ["cat", "dog"], TEMPLATES["three"], cache)
    assert len(cache) == 6 and cache.misses == 6
    again, _ = label_embeddings(model, ["dog", "cat", "fox"], TEMPLATES["three"], cache)
    assert cache.misses == 9 and len(cache) == 9, "only the new label's three texts are encoded"
    assert torch.equal(again[1], first[0]) and torch.equal(again[0], first[1])
