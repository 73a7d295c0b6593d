"""The zero-shot node inside a real ComfyUI: ClipSuiteLoader (a full CLIP, or a text encoder + clip_vision) ->
LoadImage (a 4-frame PNG, a batch of 4) -> ClipSuiteZeroShot, run by ComfyUI's own executor; its list outputs
feed a node that runs once per image. The reference is transformers' CLIPModel on the same weights."""

from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import full_clip_models as fcm

FULL, TEXT, VISION = "tiny_zero_shot_clip.safetensors", "tiny_zs_text.safetensors", "tiny_zs_vision.safetensors"
LABELS = ["portrait", "landscape", "anime", "photo"]
TEMPLATES = ["a photo of {}.", "a drawing of {}.", "{}, digital art"]
FRAMES, SIZE = 4, (60, 52)  # frames; (width, height) of each


@pytest.fixture(scope="module")
def zero_shot(comfy, tmp_path_factory):
    from PIL import Image

    model = fcm.clip_model("ViT-B/32", seed=21)
    root = tmp_path_factory.mktemp("zero_shot_models")
    for folder in ("checkpoints", "text_encoders", "clip_vision"):
        (root / folder).mkdir()
        comfy.folder_paths.add_model_folder_path(folder, str(root / folder))
    fcm.write_full(root / "checkpoints" / FULL, model, "openclip")
    fcm.write_pair(root / "text_encoders" / TEXT, root / "clip_vision" / VISION, model)
    g = torch.Generator().manual_seed(5)
    frames = [(torch.rand(SIZE[1], SIZE[0], 3, generator=g) * 255).to(torch.uint8).numpy() for _ in range(FRAMES)]
    images = [Image.fromarray(f) for f in frames]
    images[0].save(Path(comfy.folder_paths.get_input_directory()) / "zs_frames.png", save_all=True,
                   append_images=images[1:], duration=100)
    comfy.release()
    yield model, torch.from_numpy(np.stack(frames)).float() / 255.0
    comfy.release()


def graph(model: str, model_2: str = "none") -> dict:
    return {
        "1": {"class_type": "ClipSuiteLoader", "inputs": {"model": model, "model_2": model_2, "architecture": "auto",
                                                          "precision": "auto", "device": "auto"}},
        "2": {"class_type": "LoadImage", "inputs": {"image": "zs_frames.png"}},
        "3": {"class_type": "ClipSuiteZeroShot", "inputs": {"clip": ["1", 0], "images": ["2", 0],
                                                            "labels": "\n".join(LABELS) + "\n\n",
                                                            "template": " | ".join(TEMPLATES)}},
        "4": {"class_type": "PreviewAny", "inputs": {"source": ["3", 0]}},
    }


@pytest.mark.parametrize("pair", [False, True], ids=["full CLIP", "text encoder + clip_vision"])
def test_zero_shot_node_in_comfyui(comfy, zero_shot, pair):
    model, pixels = zero_shot
    g = graph(f"text_encoders/{TEXT}", f"clip_vision/{VISION}") if pair else graph(f"checkpoints/{FULL}")
    run = comfy.run(g)
    assert {"1", "3", "4"} <= set(run.executed)  # LoadImage may come from the cache of the previous run
    want = fcm.reference_probabilities(model, pixels, LABELS, TEMPLATES, factor=100.0 if pair else None)
    outputs = comfy.executor.caches.outputs.get("3")
    labels, probs, indexes, report = outputs[0], outputs[1], outputs[2], outputs[3][0]
    best = want.argmax(dim=-1).tolist()
    assert indexes == best and labels == [LABELS[i] for i in best]
    assert max(abs(p - w) for p, w in zip(probs, want.max(dim=-1).values.tolist())) <= 1e-4
    assert all(type(p) is float for p in probs) and all(type(i) is int for i in indexes)
    ui = comfy.ui("3")
    assert ui["text"] == [report] and "4 images, 4 labels, 3 templates" in report
    assert ("100 (the files hold no logit_scale)" if pair else "the model's logit_scale") in report
    sent = [d["output"] for e, d in comfy.server.events if e == "executed" and d["node"] == "3"]
    assert sent == [ui], "the browser gets the report"
    # The label list maps over PreviewAny: it runs once per image, in batch order.
    assert comfy.ui("4")["text"] == labels
