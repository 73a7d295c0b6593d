"""``python -m clip_suite duplicates``: planted near-duplicates (2% resized, JPEG-recompressed) are found and
distinct images are not paired, with a vision tower whose embeddings are known by construction.

The tower (transformers' CLIPVisionModelWithProjection, saved in the HF layout of a full CLIP) has one
32x32 patch covering the whole 32x32 input, so its patch token is a random projection W x of all the
preprocessed pixels. Class and position embeddings are 0, LayerNorms are plain (weight 1, bias 0),
queries and keys are 0 (the class token attends equally to itself and the patch), values and the
output projection are the identity, the MLP adds 0 and the visual projection is the identity. So the
class token ends as LN(LN(W x)) / 2 and the embedding is normalize(LN(W x)): the centred random
projection of the image, whose cosines follow the images' own (Johnson-Lindenstrauss).
"""

import csv
import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from helpers import tiny_models as tm
from clip_suite.cli import main
from clip_suite.cli.duplicates import duplicate_groups
from clip_suite.clip_impl.weights.loading import load_clip
from clip_suite.clip_impl.images.preprocess import load_image_file, preprocess_images
from clip_suite.clip_impl.scoring.similarity import image_embeddings

WIDTH = 256


def constructed_vision(seed=0):
    """The tower described in the module docstring (random W, everything else fixed)."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    cfg = CLIPVisionConfig(hidden_size=WIDTH, intermediate_size=4 * WIDTH, num_hidden_layers=1,
                           num_attention_heads=WIDTH // 64, image_size=32, patch_size=32, projection_dim=WIDTH,
                           hidden_act="quick_gelu")
    model = CLIPVisionModelWithProjection(cfg).eval()
    eye = torch.eye(WIDTH)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("patch_embedding.weight"):
                p.copy_(torch.randn(p.shape, generator=g) / (3 * 32 * 32) ** 0.5)
            elif name.endswith(("v_proj.weight", "out_proj.weight", "visual_projection.weight")):
                p.copy_(eye)
            elif "norm" in name and name.endswith("weight"):
                p.fill_(1.0)
            else:
                p.zero_()
            p.copy_(p.half().float())
    return model


def expected_embeddings(vmodel, paths) -> torch.Tensor:
    """normalize(LN(W x)) by hand, for images as the command reads them."""
    pixels = torch.cat([preprocess_images(load_image_file(p), 32) for p in paths])
    w = vmodel.vision_model.embeddings.patch_embedding.weight.reshape(WIDTH, -1)
    return F.normalize(F.layer_norm(pixels.reshape(len(paths), -1) @ w.T, (WIDTH,), eps=1e-5), dim=-1)


def smooth_image(rng, size=96) -> Image.Image:
    """A random picture with structure at several scales (a 6x6 random colour grid, bicubic, plus detail)."""
    coarse = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize((size, size), Image.BICUBIC)
    arr = np.asarray(coarse, dtype=np.float32) + rng.normal(0, 6, (size, size, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def jpeg(img: Image.Image, quality=85) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue()))


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("dup_model") / "constructed.safetensors"
    vmodel = constructed_vision()
    tm.write_hf_clip(path, tm.text_model(128, 2, "quick_gelu", projection=WIDTH, seed=5), vmodel)
    return path, vmodel


@pytest.fixture()
def planted(tmp_path, monkeypatch):
    """40 distinct random pictures; three of them with near-duplicates: a copy resized by 2% (PNG), a
    JPEG-recompressed copy, and one copy both resized and recompressed."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    d = tmp_path / "batch"
    (d / "seeds").mkdir(parents=True)
    rng = np.random.default_rng(42)
    originals = []
    for i in range(40):
        img = smooth_image(rng)
        path = d / ("seeds" if i % 2 else "") / f"seed_{i:02d}.png"
        img.save(path)
        originals.append((path, img))
    plant = {
        originals[3][0]: [("copy_resized.png", lambda im: im.resize((94, 94), Image.BICUBIC))],
        originals[10][0]: [("copy_q85.jpg", jpeg)],
        originals[25][0]: [("both_a.jpg", lambda im: jpeg(im.resize((98, 98), Image.LANCZOS), 90)),
                           ("both_b.webp", lambda im: im.resize((94, 94), Image.BILINEAR))],
    }
    groups = []
    for source, copies in plant.items():
        img = Image.open(source).convert("RGB")
        group = [str(source)]
        for name, make in copies:
            out = d / f"{source.stem}_{name}"
            make(img).convert("RGB").save(out)
            group.append(str(out))
        groups.append(sorted(group))
    return d, sorted(groups, key=lambda g: (-len(g), g[0]))


def test_construction_gives_the_embeddings_it_promises(model_file, planted):
    path, vmodel = model_file
    folder, _groups = planted
    files = sorted(str(p) for p in folder.rglob("*.png"))[:6]
    model = load_clip(path, precision="fp32")
    by_hand = expected_embeddings(vmodel, files)
    with torch.no_grad():
        pixels = torch.cat([preprocess_images(load_image_file(f), 32) for f in files])
        hf = F.normalize(vmodel(pixel_values=pixels).image_embeds, dim=-1)
    assert (hf - by_hand).abs().max().item() < 1e-4, "transformers' tower computes normalize(LN(W x))"
    mine = torch.cat([image_embeddings(model, load_image_file(f)) for f in files])
    assert (mine - by_hand).abs().max().item() < 1e-4


def test_planted_near_duplicates_found_and_no_false_pairs(model_file, planted, tmp_path, capsys):
    path, vmodel = model_file
    folder, groups = planted
    out = tmp_path / "dups.csv"
    assert main(["duplicates", "--model", str(path), "--out", str(out), str(folder)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-2] == "3 groups of near-duplicates (7 images) among 44 images at cosine >= 0.95"
    assert err[-1] == "index: 44 new, 0 removed, 0 reused"
    rows = list(csv.DictReader(out.open(newline="", encoding="utf-8")))
    assert list(rows[0]) == ["group", "size", "path", "cosine"]
    found = [sorted(r["path"] for r in rows if r["group"] == g) for g in ("1", "2", "3")]
    assert found == groups, "largest group first, then in the order found"
    assert all(float(r["cosine"]) >= 0.95 for r in rows)

    # The margins, by construction: copies stay far above the threshold, distinct pictures far below it.
    paths = sorted(str(p) for p in folder.rglob("*") if p.suffix in (".png", ".jpg", ".webp"))
    emb = expected_embeddings(vmodel, paths)
    cos = emb @ emb.T
    same = torch.zeros_like(cos, dtype=torch.bool)
    for g in groups:
        idx = [paths.index(p) for p in g]
        same[np.ix_(idx, idx)] = True
    off = ~torch.eye(len(paths), dtype=torch.bool)
    assert cos[same & off].min().item() > 0.97 and cos[~same & off].max().item() < 0.9

    # Printed form, from the index this time; a threshold near -1 links every image into one group.
    assert main(["duplicates", "--model", str(path), str(folder)]) == 0
    printed = capsys.readouterr()
    assert printed.err.strip().splitlines()[-1] == "index: 0 new, 0 removed, 44 reused"
    assert printed.out.splitlines()[0] == "group 1: 3 images" and printed.out.count("group ") == 3
    assert main(["duplicates", "--model", str(path), "--threshold=-0.9", str(folder)]) == 0
    assert "1 group of near-duplicates (44 images)" in capsys.readouterr().err


def test_duplicate_groups_single_linkage():
    e = F.normalize(torch.tensor([[1.0, 0, 0], [0.96, 0.28, 0], [0.84, 0.54, 0], [0, 0, 1], [0, 0.02, 1]]), dim=-1)
    # 0~1 and 1~2 are >= 0.95 while 0 and 2 are not: one group by linkage; 3~4 another.
    assert duplicate_groups(e, 0.95) == [[0, 1, 2], [3, 4]]
    assert duplicate_groups(e, 0.9999) == []


def test_bad_threshold_is_refused(model_file, planted, capsys):
    path, _ = model_file
    folder, _ = planted
    with pytest.raises(SystemExit) as e:
        main(["duplicates", "--model", str(path), "--threshold", "1.5", str(folder)])
    assert e.value.code == 2 and "cosine in (-1, 1]" in capsys.readouterr().err
