"""The example workflows: well-formed UI workflows whose CLIP Suite nodes hold valid widget values, and
that show what the README promises (tests/integration checks them against ComfyUI's own nodes too)."""

from pathlib import Path

import pytest

from helpers import workflow_check as wc
from clip_suite.clip_impl.text.chunking import chunk_prompt
from clip_suite.nodes import NODE_CLASS_MAPPINGS as OURS

EXAMPLES = Path(__file__).resolve().parents[2] / "example_workflows"
WORKFLOWS = sorted(EXAMPLES.glob("*.json"))


def by_type(workflow, node_type):
    return [n for n in workflow["nodes"] if n["type"] == node_type]


def test_examples_exist():
    assert {p.name for p in WORKFLOWS} >= {"sdxl_clip_skip_long_prompt.json", "sd15_clip_skip_2.json", "score_images.json"}


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_is_well_formed(path, standalone):
    workflow = wc.load(path)
    assert workflow["version"] == 0.4 and workflow["last_link_id"] == len(workflow["links"])
    assert not wc.link_problems(workflow)
    ours = [n for n in workflow["nodes"] if n["type"] in OURS]
    assert ours, "an example must use CLIP Suite nodes"
    for node in ours:
        assert not wc.widget_problems(node, OURS[node["type"]].INPUT_TYPES(), file_combos={"model", "model_2"})


def _sampler_inputs(workflow):
    """The encoder nodes feeding KSampler's positive and negative inputs, through the link table."""
    links = {row[0]: row for row in workflow["links"]}
    nodes = {n["id"]: n for n in workflow["nodes"]}
    (sampler,) = by_type(workflow, "KSampler")
    feeds = {i["name"]: nodes[links[i["link"]][1]] for i in sampler["inputs"] if i["link"] is not None}
    return feeds["positive"], feeds["negative"]


def test_sdxl_example():
    workflow = wc.load(EXAMPLES / "sdxl_clip_skip_long_prompt.json")
    positive, negative = _sampler_inputs(workflow)
    assert positive["type"] == negative["type"] == "ClipSuiteTextEncodeSDXL"
    text = positive["widgets_values"][0]
    assert "BREAK" in text and len(chunk_prompt(text)) >= 2
    assert sum(len(c.body) for c in chunk_prompt(text)) > 75  # long: more than one chunk without the BREAK
    assert positive["widgets_values"][2] == negative["widgets_values"][2]  # the same clip_skip on both
    for node_type in ("CheckpointLoaderSimple", "KSampler", "VAEDecode", "SaveImage"):
        assert len(by_type(workflow, node_type)) == 1


def test_sd15_example_uses_clip_skip_1():
    workflow = wc.load(EXAMPLES / "sd15_clip_skip_2.json")
    positive, negative = _sampler_inputs(workflow)
    assert positive["type"] == negative["type"] == "ClipSuiteTextEncode"
    assert positive["widgets_values"][1] == negative["widgets_values"][1] == 1


def test_score_example():
    """SDXL makes a batch; the scoring nodes get the positive prompt, a CLIP with a vision tower, and the
    decoded batch; Keep Best feeds Save Image."""
    workflow = wc.load(EXAMPLES / "score_images.json")
    links = {row[0]: row for row in workflow["links"]}
    nodes = {n["id"]: n for n in workflow["nodes"]}

    def source(node, name):
        (inp,) = [i for i in node["inputs"] if i["name"] == name]
        return nodes[links[inp["link"]][1]]

    positive, _negative = _sampler_inputs(workflow)
    (latent,) = by_type(workflow, "EmptyLatentImage")
    assert latent["widgets_values"][2] > 1, "a batch to score"
    (similarity,) = by_type(workflow, "ClipSuiteImageTextSimilarity")
    (best,) = by_type(workflow, "ClipSuiteSelectBest")
    (save,) = by_type(workflow, "SaveImage")
    for node in (similarity, best):
        assert node["widgets_values"][0] == positive["widgets_values"][0], "score the prompt that made the images"
        assert source(node, "images")["type"] == "VAEDecode"
        loader = source(node, "clip")
        assert loader["type"] == "ClipSuiteLoader" and loader["widgets_values"][1].startswith("clip_vision/")
    assert source(save, "images") is best
    assert len(chunk_prompt(positive["widgets_values"][0])) == 1, "scoring reads 75 tokens: keep the prompt short"
