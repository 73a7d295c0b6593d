"""Our preprocessing of ComfyUI IMAGE batches equals ComfyUI's own ``comfy.clip_vision.clip_preprocess``."""

import pytest
import torch

from clip_suite.clip_impl.images.preprocess import preprocess_images


@pytest.mark.parametrize(
    "shape,size",
    [
        ((2, 512, 512, 3), 224),  # square, downscaled
        ((1, 768, 512, 3), 224),  # tall: rows cropped
        ((3, 480, 853, 3), 224),  # wide, odd width
        ((1, 100, 150, 3), 224),  # small: upscaled
        ((1, 224, 300, 3), 224),  # short side already 224: resized at scale 1, then cropped
        ((1, 224, 224, 3), 224),  # no resize at all: only rounding and normalisation
        ((2, 1024, 768, 3), 336),  # ViT-L/14-336
        ((1, 333, 517, 4), 336),  # RGBA: alpha dropped by both
    ],
)
def test_equals_comfyui_clip_preprocess(comfy_path, shape, size):
    from comfy.clip_vision import clip_preprocess

    g = torch.Generator().manual_seed(sum(shape) + size)
    images = torch.rand(shape, generator=g)
    images[0, : shape[1] // 3] = 0.5 + 0.5 * torch.sin(torch.arange(shape[2]) / 3.0)[:, None]  # some structure
    want = clip_preprocess(images, size=size)
    got = preprocess_images(images, size)
    assert got.shape == want.shape == (shape[0], 3, size, size)
    assert (got - want).abs().max().item() <= 1e-6
