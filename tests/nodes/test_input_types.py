"""Every node's class-attribute API is complete and valid, and matches the contract in DESIGN 3."""

import inspect

import pytest

from clip_suite.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

# The LoRA node's inputs: our CLIP_SUITE only (ComfyUI's LoraLoader serves its CLIP), a file from the loras
# folders, and LoraLoader's strength_clip range (default, min, max).
LORA_INPUTS = {"clip": "CLIP_SUITE", "lora_name": list, "strength": ("FLOAT", 1.0, -100.0, 100.0)}

# DESIGN 3: ids, display names and input names are a public interface (saved workflows use them).
CONTRACT = {
    "ClipSuiteLoraLoader": ("Apply LoRA to CLIP (CLIP Suite)", ["clip", "lora_name", "strength"], ("CLIP_SUITE",)),
    "ClipSuiteLoader": ("Load CLIP (CLIP Suite)", ["model", "model_2", "architecture", "precision", "device"], ("CLIP_SUITE",)),
    "ClipSuiteTextEncode": (
        "CLIP Text Encode (CLIP skip, long prompts)",
        ["clip", "text", "clip_skip", "chunking", "comma_backtrack", "weighting", "pooled", "empty_prompt"],
        ("CONDITIONING",),
    ),
    "ClipSuiteTextEncodeSDXL": (
        "SDXL Text Encode (CLIP skip, long prompts)",
        ["clip", "text_g", "text_l", "clip_skip", "clip_skip_applies_to", "chunking", "comma_backtrack", "weighting",
         "pooled", "empty_prompt", "width", "height", "crop_w", "crop_h", "target_width", "target_height"],
        ("CONDITIONING",),
    ),
    "ClipSuitePromptTokens": ("Prompt Tokens (CLIP Suite)", ["text", "chunking", "comma_backtrack"], ("STRING",)),
    "ClipSuiteImageTextSimilarity": (
        "Image-Text Similarity (CLIP score)", ["clip", "images", "text", "scale"], ("FLOAT", "FLOAT", "INT", "STRING")
    ),
    "ClipSuiteSelectBest": (
        "Keep Best Images (CLIP score)", ["clip", "images", "text", "top_k", "min_score", "scale"], ("IMAGE", "FLOAT")
    ),
    "ClipSuiteAestheticScore": ("Aesthetic Score (CLIP)", ["clip", "images", "head"], ("FLOAT", "FLOAT", "INT", "STRING")),
    "ClipSuiteZeroShot": (
        "Classify Images (CLIP zero-shot)", ["clip", "images", "labels", "template"], ("STRING", "FLOAT", "INT", "STRING")
    ),
    "ClipSuiteA1111Parameters": (
        "A1111 Parameters (CLIP Suite)", ["parameters", "family"],
        ("STRING", "STRING", "INT", ["both", "clip_l", "clip_g"], ["comfy", "a1111", "a1111_no_norm", "none"],
         ["comfy", "a1111"], "INT", "FLOAT", "INT", "INT", "INT", "STRING", "STRING"),
    ),
}
# Optional inputs added after a node shipped (saved workflows without them load unchanged), in order.
OPTIONAL = {
    "ClipSuitePromptTokens": ["weighting"],
    "ClipSuiteSelectBest": ["aesthetic_head"],
    "ClipSuiteTextEncode": ["steps", "scheduler"],
    "ClipSuiteTextEncodeSDXL": ["steps", "scheduler"],
    "ClipSuiteA1111Parameters": ["image"],
}
# Enum inputs whose choices differ on one node: (node id, input) -> (choices, default).
NODE_ENUMS = {
    ("ClipSuitePromptTokens", "weighting"): (["auto", "comfy", "a1111", "a1111_no_norm", "none"], "auto"),
}
# DESIGN 3: the names of the outputs, and which ones are lists (one value per image).
OUTPUT_NAMES = {
    "ClipSuiteImageTextSimilarity": (("scores", "mean", "best_index", "report"), (True, False, False, False)),
    "ClipSuiteSelectBest": (("images", "scores"), (False, True)),
    "ClipSuiteAestheticScore": (("scores", "mean", "best_index", "report"), (True, False, False, False)),
    "ClipSuiteZeroShot": (("label", "probability", "label_index", "report"), (True, True, True, False)),
}
ENUMS = {
    "architecture": (["auto", "sd1", "sd2", "sdxl", "sdxl_refiner", "clip"], "auto"),
    "precision": (["auto", "fp32", "fp16", "bf16"], "auto"),
    "device": (["auto", "cpu", "gpu"], "auto"),
    "chunking": (["comfy", "a1111"], "comfy"),
    "weighting": (["comfy", "a1111", "a1111_no_norm", "none"], "comfy"),
    "pooled": (["first_chunk", "mean"], "first_chunk"),
    "empty_prompt": (["encode", "zeros"], "encode"),
    "clip_skip_applies_to": (["both", "clip_l", "clip_g"], "both"),
    "scale": (["clipscore_100", "clipscore_2_5", "cosine", "logit"], "clipscore_100"),
    "family": (["sd1", "sd2", "sdxl"], "sd1"),
    # ComfyUI 0.3.64's KSampler.SCHEDULERS, in its order
    "scheduler": (["simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal",
                   "linear_quadratic", "kl_optimal"], "normal"),
}
INTS = {  # name: (default, min, max)
    "clip_skip": (0, -1, 30),
    "comma_backtrack": (20, 0, 74),
    "width": (1024, 0, 16384), "height": (1024, 0, 16384), "crop_w": (0, 0, 16384), "crop_h": (0, 0, 16384),
    "target_width": (1024, 0, 16384), "target_height": (1024, 0, 16384),
    "top_k": (1, 1, 4096),
    "steps": (0, 0, 10000),
}
FLOATS = {"min_score": (0.0, -1.0, 100.0)}  # name: (default, min, max)
TYPES = {
    "clip": "CLIP_SUITE,CLIP", "text": "STRING", "text_g": "STRING", "text_l": "STRING", "images": "IMAGE",
    "labels": "STRING", "parameters": "STRING",
}
LINE_STRINGS = {"template": "a photo of {}."}  # one-line STRING inputs: name -> default


def test_contract_ids_and_display_names():
    assert set(NODE_CLASS_MAPPINGS) == set(CONTRACT)
    for node_id, (display, _inputs, _outputs) in CONTRACT.items():
        assert NODE_DISPLAY_NAME_MAPPINGS[node_id] == display


@pytest.mark.parametrize("node_id", sorted(CONTRACT))
def test_input_types_valid(node_id, standalone):
    cls = NODE_CLASS_MAPPINGS[node_id]
    _display, inputs, outputs = CONTRACT[node_id]
    spec = cls.INPUT_TYPES()
    assert set(spec) <= {"required", "optional", "hidden"}
    required = spec["required"]
    assert list(required) == inputs, "input names and order are the contract"
    optional = spec.get("optional", {})
    assert list(optional) == OPTIONAL.get(node_id, []), "optional inputs come after the shipped ones"
    for name, entry in {**required, **optional}.items():
        assert isinstance(entry, tuple) and len(entry) == 2, f"{name}: (type, options) expected"
        kind, opts = entry
        assert isinstance(opts.get("tooltip"), str) and len(opts["tooltip"]) > 20, f"{name}: tooltip missing"
        if node_id == "ClipSuiteLoraLoader":
            want = LORA_INPUTS[name]
            if want is list:
                assert isinstance(kind, list) and all(isinstance(v, str) for v in kind)
            elif isinstance(want, tuple):
                assert (kind, opts["default"], opts["min"], opts["max"]) == want and opts["step"] <= 0.01, name
            else:
                assert kind == want, name
        elif name in ENUMS:
            values, default = NODE_ENUMS.get((node_id, name), ENUMS[name])
            assert kind == values and opts["default"] == default, name
        elif name in INTS:
            default, lo, hi = INTS[name]
            assert kind == "INT" and (opts["default"], opts["min"], opts["max"]) == (default, lo, hi), name
            assert opts["min"] <= opts["default"] <= opts["max"]
        elif name in FLOATS:
            default, lo, hi = FLOATS[name]
            assert kind == "FLOAT" and (opts["default"], opts["min"], opts["max"]) == (default, lo, hi), name
            assert 0 < opts["step"] <= 0.01, "fine enough for cosine thresholds"
        elif name in LINE_STRINGS:
            assert kind == "STRING" and opts["default"] == LINE_STRINGS[name] and not opts.get("multiline"), name
            assert opts.get("dynamicPrompts") is False, "the frontend's {a|b} random choice must not touch it"
        elif name in TYPES:
            assert kind == TYPES[name], name
            if kind == "STRING":
                assert opts.get("multiline") is True
        elif name in ("head", "aesthetic_head"):  # files of the aesthetic folder; Keep Best's starts with none
            assert isinstance(kind, list) and kind and all(isinstance(v, str) for v in kind)
            assert name != "aesthetic_head" or (kind[0] == "none" and opts["default"] == "none")
        elif name == "image":  # LoadImage's list of the input folder, with its upload button
            assert isinstance(kind, list) and kind[0] == "none" and opts["default"] == "none"
            assert opts.get("image_upload") is True
        elif name in ("model", "model_2"):
            assert isinstance(kind, list) and all(isinstance(v, str) for v in kind)
            assert name != "model_2" or (kind[0] == "none" and opts["default"] == "none")
        else:
            pytest.fail(f"{node_id}.{name} is not covered by this test")


@pytest.mark.parametrize("node_id", sorted(CONTRACT))
def test_class_attributes(node_id):
    cls = NODE_CLASS_MAPPINGS[node_id]
    _display, inputs, outputs = CONTRACT[node_id]
    assert cls.CATEGORY == "CLIP Suite"
    assert cls.RETURN_TYPES == outputs
    assert len(cls.OUTPUT_TOOLTIPS) == len(outputs) and all(cls.OUTPUT_TOOLTIPS)
    assert len(getattr(cls, "RETURN_NAMES", outputs)) == len(outputs)
    assert isinstance(cls.DESCRIPTION, str) and len(cls.DESCRIPTION) > 40
    if node_id in OUTPUT_NAMES:
        names, is_list = OUTPUT_NAMES[node_id]
        assert cls.RETURN_NAMES == names and cls.OUTPUT_IS_LIST == is_list
    else:
        assert not any(getattr(cls, "OUTPUT_IS_LIST", ()))
    method = getattr(cls, cls.FUNCTION)
    params = list(inspect.signature(method).parameters)[1:]
    optional = OPTIONAL.get(node_id, [])
    assert params == inputs + optional, "the function takes exactly the inputs, as ComfyUI passes them by name"
    defaults = [inspect.signature(method).parameters[n].default for n in optional]
    assert inspect.Parameter.empty not in defaults, "an optional input needs a default (old workflows lack it)"


def test_tooltips_translate_clip_skip(standalone):
    tip = NODE_CLASS_MAPPINGS["ClipSuiteTextEncode"].INPUT_TYPES()["required"]["clip_skip"][1]["tooltip"]
    for phrase in ("'Clip skip 2' = 1", "CLIPSetLastLayer -N = clip_skip N-2", "diffusers", "sdxl_clip_l_skip"):
        assert phrase in tip


@pytest.mark.parametrize("node_id", ["ClipSuiteImageTextSimilarity", "ClipSuiteSelectBest"])
def test_tooltips_explain_scales(node_id):
    required = NODE_CLASS_MAPPINGS[node_id].INPUT_TYPES()["required"]
    tip = required["scale"][1]["tooltip"]
    for phrase in ("max(100*cos, 0)", "torchmetrics", "2.5*max(cos, 0)", "CLIPScore paper", "clipscore_100 / 40", "-1..1"):
        assert phrase in tip
    for phrase in ("exp(logit_scale)*cos", "PickScore", "softmax", "HPS v2"):
        assert phrase in tip
    assert "no vision tower" in required["clip"][1]["tooltip"] and "clip_vision" in required["clip"][1]["tooltip"]
    if "min_score" in required:
        assert "units of scale" in required["min_score"][1]["tooltip"]
