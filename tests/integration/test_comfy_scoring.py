"""The scoring nodes inside a real ComfyUI: ClipSuiteLoader(text encoder + clip_vision) -> LoadImage (a batch
of 4) -> ClipSuiteImageTextSimilarity / ClipSuiteSelectBest, run by ComfyUI's own executor.

The models are tiny random-weight files in real layouts (a CLIP-L text encoder in HF names and a matching
ComfyUI clip_vision file) written into temp model folders that ComfyUI's folder_paths lists; the images are
a 4-frame PNG (LoadImage turns the frames of an animated image into a batch) and the same 4 frames as
separate PNGs joined by ImageBatch.
"""

import asyncio
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import tiny_models as tm
from clip_suite.clip_impl.weights.loading import load_clip
from clip_suite.clip_impl.scoring.similarity import score_images
from helpers.vision_fixtures import v_model  # noqa: F401

PROMPT = "a photo of a red fox sitting in the snow, golden hour"
TEXT_ENCODER, CLIP_VISION = "tiny_clip_l.safetensors", "tiny_vit_l.safetensors"
FRAMES, SIZE = 4, (40, 48)  # frames; (width, height) of each


@pytest.fixture(scope="module")
def scoring(comfy, tmp_path_factory, l_model, v_model):
    """Tiny model files in temp ComfyUI model folders, and the test images in ComfyUI's input folder."""
    from PIL import Image

    root = tmp_path_factory.mktemp("scoring_models")
    (root / "text_encoders").mkdir()
    (root / "clip_vision").mkdir()
    te = tm.save(root / "text_encoders" / TEXT_ENCODER, tm.hf_state(l_model))
    cv = tm.write_clip_vision(root / "clip_vision" / CLIP_VISION, v_model)
    comfy.folder_paths.add_model_folder_path("text_encoders", str(root / "text_encoders"))
    comfy.folder_paths.add_model_folder_path("clip_vision", str(root / "clip_vision"))
    g = torch.Generator().manual_seed(42)
    frames = [(torch.rand(SIZE[1], SIZE[0], 3, generator=g) * 255).to(torch.uint8).numpy() for _ in range(FRAMES)]
    images = [Image.fromarray(f) for f in frames]
    inputs = comfy.folder_paths.get_input_directory()
    images[0].save(f"{inputs}/four_frames.png", save_all=True, append_images=images[1:], duration=100)
    for i, img in enumerate(images):
        img.save(f"{inputs}/frame_{i}.png")
    comfy.release()
    yield {"files": [te, cv], "pixels": torch.from_numpy(np.stack(frames)).float() / 255.0}
    comfy.release()


def loader():
    return {"class_type": "ClipSuiteLoader", "inputs": {
        "model": f"text_encoders/{TEXT_ENCODER}", "model_2": f"clip_vision/{CLIP_VISION}",
        "architecture": "auto", "precision": "auto", "device": "auto"}}


def similarity(images, scale="cosine"):
    return {"class_type": "ClipSuiteImageTextSimilarity",
            "inputs": {"clip": ["1", 0], "images": images, "text": PROMPT, "scale": scale}}


def select(top_k, min_score):
    inputs = {"clip": ["1", 0], "images": ["2", 0], "text": PROMPT, "top_k": top_k, "min_score": min_score}
    return {"class_type": "ClipSuiteSelectBest", "inputs": {**inputs, "scale": "cosine"}}


def list_output(comfy, node_id, index=0):
    """A list output as ComfyUI holds it (all values, not only the first)."""
    return comfy.executor.caches.outputs.get(node_id)[index]


def reference(scoring, scale="cosine"):
    return score_images(load_clip(scoring["files"], with_vision=True), scoring["pixels"], PROMPT, scale, cache=None)


def test_scores_every_image_of_a_loaded_batch(comfy, scoring):
    graph = {"1": loader(), "2": {"class_type": "LoadImage", "inputs": {"image": "four_frames.png"}},
             "3": similarity(["2", 0])}
    run = comfy.run(graph)
    assert set(run.executed) == {"1", "2", "3"}
    batch = comfy.output("2")
    assert batch.shape == (FRAMES, SIZE[1], SIZE[0], 3) and torch.equal(batch, scoring["pixels"])
    scores = list_output(comfy, "3")
    ui = comfy.ui("3")
    want = reference(scoring)
    assert len(scores) == FRAMES and all(type(s) is float for s in scores)
    assert scores == pytest.approx(want.scores, abs=1e-6) and ui["scores"] == scores
    assert comfy.output("3", 1) == pytest.approx(want.mean, abs=1e-6) and comfy.output("3", 2) == want.best_index
    assert ui["text"] == [comfy.output("3", 3)] and "4 images: mean" in ui["text"][0]
    sent = [d["output"] for e, d in comfy.server.events if e == "executed" and d["node"] == "3"]
    assert sent == [ui], "the browser gets the per-image scores"
    # ComfyUI's model management holds the vision tower and the text tower that pairs with it.
    clip = comfy.output("1")
    assert clip.model.vision is not None and set(clip.patchers) == {"l", "vision"}
    loaded = {id(m.model) for m in comfy.mm.current_loaded_models}
    assert {id(clip.patchers["vision"]), id(clip.patchers["l"])} <= loaded


def test_image_batch_of_four_files_keeps_order(comfy, scoring):
    load = {str(10 + i): {"class_type": "LoadImage", "inputs": {"image": f"frame_{i}.png"}} for i in range(FRAMES)}
    graph = {"1": loader(), **load,
             "20": {"class_type": "ImageBatch", "inputs": {"image1": ["10", 0], "image2": ["11", 0]}},
             "21": {"class_type": "ImageBatch", "inputs": {"image1": ["12", 0], "image2": ["13", 0]}},
             "22": {"class_type": "ImageBatch", "inputs": {"image1": ["20", 0], "image2": ["21", 0]}},
             "3": similarity(["22", 0], "clipscore_100")}
    comfy.run(graph)
    scores = list_output(comfy, "3")
    assert len(scores) == FRAMES and comfy.ui("3")["scores"] == scores
    assert scores == pytest.approx(reference(scoring, "clipscore_100").scores, abs=1e-4)


def test_select_best_feeds_save_image(comfy, scoring):
    graph = {"1": loader(), "2": {"class_type": "LoadImage", "inputs": {"image": "four_frames.png"}},
             "3": select(2, -1.0),
             "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "best"}}}
    comfy.run(graph)
    want = reference(scoring)
    order = sorted(range(FRAMES), key=lambda i: -want.cosines[i])
    kept, scores = comfy.output("3"), list_output(comfy, "3", 1)
    assert torch.equal(kept, scoring["pixels"][order[:2]])
    assert scores == pytest.approx([want.scores[i] for i in order[:2]], abs=1e-6) and comfy.ui("3")["scores"] == scores
    assert len(comfy.ui("4")["images"]) == 2


def test_select_best_with_none_passing_skips_save_image(comfy, scoring):
    graph = {"1": loader(), "2": {"class_type": "LoadImage", "inputs": {"image": "four_frames.png"}},
             "3": select(1, 1.0),  # a cosine of 1 is out of reach
             "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "none"}},
             "5": {"class_type": "PreviewAny", "inputs": {"source": ["3", 1]}}}
    comfy.run(graph)  # succeeds: no execution error
    ui = comfy.ui("3")
    assert ui["scores"] == [] and ui["text"][0].startswith("kept none of 4 images")
    blocker = comfy.pack_module("nodes.host").get_host().blocked()
    assert type(comfy.output("3")) is type(blocker) and blocker.message is None
    assert not comfy.ui("4").get("images") and not comfy.ui("5")
    saved = comfy.folder_paths.get_output_directory()
    assert not list(Path(saved).glob("none_*.png"))


def test_native_clip_is_refused_with_advice(comfy, scoring):
    graph = {"1": {"class_type": "CLIPLoader", "inputs": {"clip_name": "clip_l.safetensors", "type": "stable_diffusion",
                                                          "device": "default"}},
             "2": {"class_type": "LoadImage", "inputs": {"image": "four_frames.png"}},
             "3": similarity(["2", 0])}
    valid, error, outputs, node_errors = asyncio.run(comfy.execution.validate_prompt("native", graph, None))
    assert valid, (error, node_errors)  # CLIP is accepted by the input's type union
    comfy.server.events.clear()
    comfy.executor.execute(graph, "native", {"client_id": comfy.server.client_id}, outputs)
    errors = [d for e, d in comfy.server.events if e == "execution_error"]
    assert len(errors) == 1 and errors[0]["node_id"] == "3"
    message = errors[0]["exception_message"]
    assert "ComfyUI's own CLIP" in message and "no vision tower" in message and "clip_vision" in message
