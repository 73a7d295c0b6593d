"""Prompts from image metadata: ComfyUI API graphs (PNG chunk, WebP EXIF) and A1111 parameters (PNG, JPEG)."""

import json

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from clip_suite.clip_impl.images.metadata import (
    EXIF_IFD,
    EXIF_USER_COMMENT,
    prompt_from_graph,
    prompt_from_image,
    prompt_from_parameters,
)


def enc(text, cls="CLIPTextEncode", **extra):
    return {"class_type": cls, "inputs": {"text": text, "clip": ["4", 1], **extra}}


def ksampler(pos="6", neg="7", cls="KSampler", latent=("5", 0)):
    return {"class_type": cls, "inputs": {"positive": [pos, 0], "negative": [neg, 0], "latent_image": list(latent)}}


BASIC = {
    "3": ksampler(),
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd15.safetensors"}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
    "6": enc("a red fox in the snow"),
    "7": enc("blurry, lowres"),
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
    "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "x"}},
}


def _with(**nodes):
    graph = json.loads(json.dumps(BASIC))
    graph.update(nodes)
    return graph


@pytest.mark.parametrize(
    "graph,text,syntax",
    [
        (BASIC, "a red fox in the snow", "comfy"),
        (_with(**{"3": ksampler(cls="KSamplerAdvanced")}), "a red fox in the snow", "comfy"),
        (_with(**{"6": {"class_type": "CLIPTextEncodeSDXL", "inputs": {"text_g": "g words", "text_l": "l words", "clip": ["4", 1]}}}), "g words", "comfy"),
        (_with(**{"6": {"class_type": "ClipSuiteTextEncodeSDXL", "inputs": {"text_g": "ours (g:1.2)", "text_l": "", "weighting": "a1111", "clip": ["4", 1]}}}), "ours (g:1.2)", "a1111"),
        (_with(**{"6": enc("suite", "ClipSuiteTextEncode", weighting="comfy")}), "suite", "comfy"),
        # through a primitive node and a string concatenation
        (_with(**{"6": enc(["20", 0]), "20": {"class_type": "PrimitiveStringMultiline", "inputs": {"value": "from a primitive"}}}), "from a primitive", "comfy"),
        (_with(**{"6": enc(["21", 0]), "21": {"class_type": "StringConcatenate", "inputs": {"string_a": ["20", 0], "string_b": "b", "delimiter": ", "}}, "20": {"class_type": "PrimitiveString", "inputs": {"value": "a"}}}), "a, b", "comfy"),
        # through conditioning nodes: ControlNet (positive/negative), combine (both texts)
        (_with(**{"3": ksampler(pos="30", neg="30"), "30": {"class_type": "ControlNetApplyAdvanced", "inputs": {"positive": ["6", 0], "negative": ["7", 0], "control_net": ["31", 0], "image": ["32", 0], "strength": 1.0}}}), "a red fox in the snow", "comfy"),
        (_with(**{"3": ksampler(pos="30"), "30": {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["6", 0], "conditioning_2": ["33", 0]}}, "33": enc("a forest")}), "a red fox in the snow, a forest", "comfy"),
    ],
)
def test_graphs(graph, text, syntax):
    found = prompt_from_graph(graph)
    assert (found.text, found.syntax, found.source) == (text, syntax, "comfyui")


def test_custom_sampler_and_guiders():
    graph = _with(**{
        "3": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["40", 0], "guider": ["41", 0], "sampler": ["42", 0], "sigmas": ["43", 0], "latent_image": ["5", 0]}},
        "41": {"class_type": "CFGGuider", "inputs": {"model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "cfg": 7}},
    })
    assert prompt_from_graph(graph).text == "a red fox in the snow"
    flux = _with(**{
        "3": {"class_type": "SamplerCustomAdvanced", "inputs": {"guider": ["41", 0], "latent_image": ["5", 0]}},
        "41": {"class_type": "BasicGuider", "inputs": {"model": ["4", 0], "conditioning": ["44", 0]}},
        "44": {"class_type": "FluxGuidance", "inputs": {"conditioning": ["45", 0], "guidance": 3.5}},
        "45": {"class_type": "CLIPTextEncodeFlux", "inputs": {"clip_l": "flux words", "t5xxl": "long t5 words", "guidance": 3.5, "clip": ["4", 1]}},
    })
    assert prompt_from_graph(flux).text == "flux words"
    custom = _with(**{"3": {"class_type": "SamplerCustom", "inputs": {"positive": ["6", 0], "negative": ["7", 0], "cfg": 8.0}}})
    assert prompt_from_graph(custom).text == "a red fox in the snow"


def test_the_most_downstream_sampler_wins():
    """Hires fix / refiner: the second pass made the image (its latent comes from the first)."""
    graph = _with(**{
        "50": ksampler(pos="51", latent=("3", 0)),
        "51": enc("second pass words"),
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["50", 0], "vae": ["4", 2]}},
    })
    assert prompt_from_graph(graph).text == "second pass words"


def test_graphs_without_prompt_and_hostile_graphs():
    assert prompt_from_graph({"1": {"class_type": "LoadImage", "inputs": {"image": "x.png"}}}) is None
    assert prompt_from_graph({"1": "not a node", "2": {"inputs": "no"}}) is None
    cycle = {"1": {"class_type": "KSampler", "inputs": {"positive": ["2", 0]}},
             "2": {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["3", 0]}},
             "3": {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["2", 0]}}}
    assert prompt_from_graph(cycle) is None
    chain = {str(i): {"class_type": "ConditioningSetArea", "inputs": {"conditioning": [str(i + 1), 0]}} for i in range(1, 3000)}
    chain["0"] = {"class_type": "KSampler", "inputs": {"positive": ["1", 0]}}
    chain["3000"] = enc("deep")
    assert prompt_from_graph(chain).text == "deep"
    loop = {"1": {"class_type": "KSampler", "inputs": {"positive": ["2", 0]}}, "2": enc(["3", 0]),
            "3": {"class_type": "PrimitiveString", "inputs": {"value": ["3", 0]}}}
    assert prompt_from_graph(loop) is None


@pytest.mark.parametrize(
    "params,text",
    [
        ("a cat\nNegative prompt: ugly\nSteps: 20, Sampler: Euler a, CFG scale: 7", "a cat"),
        ("a cat,\nwith two lines\nSteps: 20, Sampler: Euler a", "a cat,\nwith two lines"),
        ("a cat\nNegative prompt: ugly\nsecond negative line\nSteps: 20", "a cat"),
        ("only a prompt", "only a prompt"),
        ("Steps: 20, Sampler: Euler", ""),
    ],
)
def test_a1111_parameters(params, text):
    assert prompt_from_parameters(params) == text


def _png(path, **chunks):
    info = PngInfo()
    for k, v in chunks.items():
        info.add_text(k, v)
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(path, pnginfo=info)
    return Image.open(path)


def test_png_chunks_graph_wins_over_parameters(tmp_path):
    both = _png(tmp_path / "a.png", prompt=json.dumps(BASIC), parameters="a1111 words\nSteps: 20")
    assert prompt_from_image(both).text == "a red fox in the snow"
    bad_json = _png(tmp_path / "b.png", prompt="{not json", parameters="a1111 words\nSteps: 20")
    assert (prompt_from_image(bad_json).text, prompt_from_image(bad_json).syntax) == ("a1111 words", "a1111")
    with pytest.raises(ValueError, match="not valid JSON"):
        prompt_from_image(_png(tmp_path / "c.png", prompt="{not json"))
    with pytest.raises(ValueError, match="no sampler"):
        prompt_from_image(_png(tmp_path / "d.png", prompt=json.dumps({"1": {"class_type": "LoadImage", "inputs": {}}})))
    with pytest.raises(ValueError, match="no prompt in the metadata"):
        prompt_from_image(_png(tmp_path / "e.png"))
    with pytest.raises(ValueError, match="empty prompt"):
        prompt_from_image(_png(tmp_path / "f.png", parameters="\nNegative prompt: x\nSteps: 2"))


def test_jpeg_user_comment_and_webp_exif(tmp_path):
    """A1111 JPEG/WebP: EXIF UserComment "UNICODE" + UTF-16; ComfyUI WebP: tag 0x0110 "prompt:{json}"."""
    pixels = Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8))
    for order in ("utf-16-be", "utf-16-le"):
        exif = Image.Exif()
        exif.get_ifd(EXIF_IFD)[EXIF_USER_COMMENT] = b"UNICODE\0" + "jpeg words\nSteps: 20".encode(order)
        pixels.save(tmp_path / "a.jpg", exif=exif)
        with Image.open(tmp_path / "a.jpg") as img:
            assert prompt_from_image(img).text == "jpeg words"
    exif = Image.Exif()
    exif[0x0110] = "prompt:" + json.dumps(BASIC)
    pixels.save(tmp_path / "a.webp", exif=exif, lossless=True)
    with Image.open(tmp_path / "a.webp") as img:
        assert prompt_from_image(img).text == "a red fox in the snow"
