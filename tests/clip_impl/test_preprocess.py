"""Preprocessing: hand-checked sizes, crops and normalisation; channel rules; bad batches; image files."""

import numpy as np
import pytest
import torch
from PIL import Image

from clip_suite.clip_impl.images.preprocess import (
    CLIP_MEAN,
    CLIP_STD,
    load_image_file,
    preprocess_images,
    resize_crop,
)

MEAN = torch.tensor(CLIP_MEAN).view(3, 1, 1)
STD = torch.tensor(CLIP_STD).view(3, 1, 1)


def test_normalisation_by_hand():
    """51/255 = 0.2 exactly: no resize at 224, 8-bit rounding keeps it, then (x - mean) / std per channel."""
    image = torch.full((1, 224, 224, 3), 0.2)
    image[..., 1] = 0.6  # 153/255
    out = preprocess_images(image, 224)
    assert out.shape == (1, 3, 224, 224) and out.dtype == torch.float32
    want = (torch.tensor([0.2, 0.6, 0.2]) - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    assert torch.allclose(out[0, :, 100, 100], want, atol=1e-6)
    assert torch.allclose(out[0], want.view(3, 1, 1).expand(3, 224, 224), atol=1e-6)


def test_values_are_rounded_to_8_bits():
    """0.5 is 127.5/255: rounded (half to even) to 128/255, as CLIP's 8-bit pipeline and ComfyUI do."""
    out = preprocess_images(torch.full((1, 8, 8, 3), 0.5), 8)
    assert torch.allclose(out[0, :, 0, 0], (128 / 255 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD), atol=1e-6)


@pytest.mark.parametrize(
    "h,w,size,resized",
    [
        (100, 200, 32, (32, 64)),  # wide: short side (height) to 32, width 0.32 * 200 = 64
        (300, 200, 224, (336, 224)),  # tall: 224/200 * 300 = 336
        (10, 15, 32, (32, 48)),  # small: upscaled
        (336, 500, 336, (336, 500)),  # short side already right: only the crop
        (99, 100, 32, (32, 32)),  # 32/99 * 100 = 32.32 -> 32
    ],
)
def test_short_side_then_centre_crop(h, w, size, resized):
    # Columns (or rows) numbered so the crop offset can be read back after a box-like resize.
    image = torch.zeros(1, 3, h, w)
    out = resize_crop(image, size)
    assert out.shape == (1, 3, size, size)
    # The crop is centred: (resized - size) // 2 from the top/left (checked with a half-split image).
    split = torch.zeros(1, 3, h, w)
    if resized[1] > size:
        split[..., w // 2 :] = 1.0
        col = resize_crop(split, size)[0, 0, size // 2]
        left = (resized[1] - size) // 2
        edge = resized[1] // 2 - left  # where the split lands inside the crop
        assert torch.all(col[: edge - 3] < 0.01) and torch.all(col[edge + 3 :] > 0.99)
    if resized[0] > size:
        split[..., h // 2 :, :] = 1.0
        row = resize_crop(split, size)[0, 0, :, size // 2]
        top = (resized[0] - size) // 2
        edge = resized[0] // 2 - top
        assert torch.all(row[: edge - 3] < 0.01) and torch.all(row[edge + 3 :] > 0.99)


def test_constant_images_stay_constant_at_any_size():
    for shape in ((1, 37, 91, 3), (2, 400, 300, 3), (1, 5, 5, 3)):
        out = preprocess_images(torch.full(shape, 1.0), 32)
        assert torch.allclose(out, ((1.0 - MEAN) / STD).expand_as(out), atol=1e-5)


def test_channel_rules():
    g = torch.Generator().manual_seed(0)
    rgb = torch.rand(2, 40, 30, 3, generator=g)
    rgba = torch.cat([rgb, torch.rand(2, 40, 30, 1, generator=g)], dim=-1)
    assert torch.equal(preprocess_images(rgba, 32), preprocess_images(rgb, 32))  # alpha dropped
    grey = rgb[..., :1]
    assert torch.equal(preprocess_images(grey, 32), preprocess_images(grey.expand(-1, -1, -1, 3), 32))


def test_slight_overshoot_is_clipped():
    image = torch.full((1, 16, 16, 3), 1.08)  # bicubic upscales overshoot a little
    assert torch.equal(preprocess_images(image, 16), preprocess_images(torch.ones(1, 16, 16, 3), 16))


@pytest.mark.parametrize(
    "images,match",
    [
        (torch.rand(32, 32, 3), r"\[B, H, W, C\].*3 dimensions.*batch dimension"),
        (torch.rand(1, 1, 32, 32, 3), r"5 dimensions"),
        (torch.rand(1, 32, 32, 2), r"2 channels; expected 3"),
        (torch.rand(1, 3, 32, 32), r"32 channels"),  # channels-first by mistake
        (torch.rand(0, 32, 32, 3), "empty"),
        (torch.rand(1, 0, 32, 3), "empty"),
        (torch.randint(0, 255, (1, 8, 8, 3), dtype=torch.uint8), "float values 0..1.*uint8"),
        (torch.rand(1, 8, 8, 3) * 255, r"values range .*0\.\.255"),
        (torch.rand(1, 8, 8, 3) * 2 - 1, r"values range -"),
        ([[0.0]], "expected a torch tensor"),
    ],
)
def test_bad_batches_are_refused(images, match):
    with pytest.raises(ValueError, match=match):
        preprocess_images(images, 32)


def test_nan_names_the_image():
    images = torch.rand(4, 8, 8, 3)
    images[2, 3, 3, 1] = float("nan")
    images[3, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="images 2, 3 hold NaN or infinite"):
        preprocess_images(images, 8)


def _save(path, array, **kw):
    Image.fromarray(array).save(path, **kw)
    return path


def test_files_rgb_rgba_grey_16bit(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    t = load_image_file(_save(tmp_path / "a.png", rgb))
    assert t.shape == (1, 20, 30, 3) and torch.equal(t[0], torch.from_numpy(rgb).float() / 255)
    rgba = np.concatenate([rgb, rng.integers(0, 256, (20, 30, 1), dtype=np.uint8)], axis=-1)
    assert torch.equal(load_image_file(_save(tmp_path / "b.png", rgba)), t)  # alpha dropped
    grey = rgb[..., 0]
    g = load_image_file(_save(tmp_path / "c.png", grey))
    assert g.shape == (1, 20, 30, 3) and torch.equal(g[..., 1], torch.from_numpy(grey).float()[None] / 255)
    deep = (np.arange(600, dtype=np.uint16).reshape(20, 30) * 100).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "d.png")
    d = load_image_file(tmp_path / "d.png")
    assert torch.allclose(d[0, :, :, 0], torch.from_numpy(deep.astype(np.float32)) / 65535, atol=1e-6)


def test_files_jpeg_webp_and_exif_orientation(tmp_path):
    rgb = np.zeros((20, 30, 3), dtype=np.uint8)
    rgb[:, :10] = 255  # white on the left
    assert load_image_file(_save(tmp_path / "a.jpg", rgb, quality=95)).shape == (1, 20, 30, 3)
    assert load_image_file(_save(tmp_path / "a.webp", rgb, lossless=True)).shape == (1, 20, 30, 3)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    _save(tmp_path / "r.jpg", rgb, quality=95, exif=exif)
    r = load_image_file(tmp_path / "r.jpg")
    assert r.shape == (1, 30, 20, 3) and r[0, :10].mean() > 0.9 and r[0, 20:].mean() < 0.1  # white on top


def test_broken_files_name_the_file(tmp_path):
    (tmp_path / "garbage.png").write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match="garbage.png: not an image"):
        load_image_file(tmp_path / "garbage.png")
    _save(tmp_path / "whole.png", np.zeros((64, 64, 3), dtype=np.uint8) + 7)
    data = (tmp_path / "whole.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.png: cannot read the image"):
        load_image_file(tmp_path / "cut.png")
    with pytest.raises(ValueError, match="missing.png: file not found"):
        load_image_file(tmp_path / "missing.png")
