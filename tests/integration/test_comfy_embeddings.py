"""Textual-inversion embeddings inside a real ComfyUI: our encoders against CLIPTextEncode and
CLIPTextEncodeSDXL with ComfyUI's ``embeddings`` folder pointed at random-weight embedding files.

Files (written here, CLIP-like magnitudes): SD1.5 ``emb_params`` .safetensors and A1111 ``string_to_param``
.pt with 1 and 4 vectors; SDXL files with ``clip_l``/``clip_g`` tensors, 1 and 4 vectors. Ours runs on our
loader (checkpoint layout) and on the native CLIP fed into our node. Bad files (a pickle that would run
code, an empty file, a wrong width) go through our node: a warning naming each file, and the code never runs.
"""

import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

from comfy_harness import SIZES, assert_conditioning_close, sink, suite_encode, suite_encode_sdxl, suite_loader

SD15_PROMPT = (
    "a photo of a (embedding:cs_sd_one:1.2) cat, (embedding:cs_a1111_four.pt:1.2), in a garden full of roses, "
    "embedding:cs_sd_four, (embedding:cs_a1111_one:0.8) soft light"
)
# 73 tokens, then a 4-vector embedding that does not fit the first chunk: it moves whole to the second.
SD15_LONG = ", ".join(["a very detailed oil painting of a quiet harbour"] * 7) + ", at dawn with (embedding:cs_sd_four:1.2) boats"
SDXL_PROMPT = (
    "a (embedding:cs_xl_one:1.2) fox in the snow, (embedding:cs_xl_four:1.2), embedding:cs_sd_four, "
    "highly detailed"  # an SD1.5 embedding: CLIP-L uses it, CLIP-G (1280 wide) leaves it out
)
BAD_PROMPT = "a embedding:cs_evil_raw embedding:cs_evil_zip embedding:cs_empty embedding:cs_narrow cat"


class Evil:
    """Unpickling this runs os.mkdir(marker): the side effect that must never happen."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.fixture(scope="module")
def emb_folder(comfy, tmp_path_factory):
    """A folder of embeddings registered as ComfyUI's first ``embeddings`` folder (removed afterwards)."""
    d = tmp_path_factory.mktemp("cs_embeddings")
    g = torch.Generator().manual_seed(21)

    def vec(n, width):
        return (torch.randn(n, width, generator=g) * 0.02).half()

    save_file({"emb_params": vec(1, 768)}, str(d / "cs_sd_one.safetensors"))
    save_file({"emb_params": vec(4, 768)}, str(d / "cs_sd_four.safetensors"))
    for n, name in ((1, "one"), (4, "four")):
        torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": vec(n, 768).float()},
                    "name": f"cs_a1111_{name}", "step": 1000}, d / f"cs_a1111_{name}.pt")
    save_file({"clip_l": vec(1, 768), "clip_g": vec(1, 1280)}, str(d / "cs_xl_one.safetensors"))
    save_file({"clip_l": vec(4, 768), "clip_g": vec(4, 1280)}, str(d / "cs_xl_four.safetensors"))
    marker = str(tmp_path_factory.mktemp("cs_marker") / "code_ran")
    with open(d / "cs_evil_raw.pt", "wb") as f:
        pickle.dump({"string_to_param": {"*": Evil(marker)}}, f)
    torch.save({"string_to_param": {"*": Evil(marker)}}, d / "cs_evil_zip.pt")
    (d / "cs_empty.safetensors").write_bytes(b"")
    save_file({"emb_params": vec(2, 1024)}, str(d / "cs_narrow.safetensors"))  # an SD2.x embedding
    comfy.folder_paths.add_model_folder_path("embeddings", str(d), is_default=True)
    yield d, marker
    comfy.folder_paths.folder_names_and_paths["embeddings"][0].remove(str(d))
    comfy.release()








def test_sd15_embeddings_match_clip_text_encode(comfy, emb_folder):
    comfy.release()
    graph = {
        "1": {"class_type": "CLIPLoader", "inputs": {"clip_name": "clip_l.safetensors", "type": "stable_diffusion",
                                                     "device": "default"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 0], "text": SD15_PROMPT}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 0], "text": SD15_LONG}},
        "4": suite_loader("checkpoints/sd15_te.safetensors"),
        "5": suite_encode("4", SD15_PROMPT), "6": suite_encode("4", SD15_LONG),
        "7": suite_encode("1", SD15_PROMPT), "8": suite_encode("1", SD15_LONG),
        "99": sink("2", "3", "5", "6", "7", "8"),
    }
    run = comfy.run(graph)
    ref, ref_long = comfy.output("2"), comfy.output("3")
    plain = {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 0], "text": "a photo of a cat"}}
    assert ref[0][0].shape == (1, 77, 768) and ref_long[0][0].shape == (1, 154, 768)
    ratios = {
        "our loader": assert_conditioning_close(comfy.output("5"), ref, "SD1.5 embeddings, our loader"),
        "our loader, 2 chunks": assert_conditioning_close(comfy.output("6"), ref_long, "SD1.5 long, our loader"),
        "native CLIP into ours": assert_conditioning_close(comfy.output("7"), ref, "SD1.5 embeddings, native CLIP"),
        "native CLIP, 2 chunks": assert_conditioning_close(comfy.output("8"), ref_long, "SD1.5 long, native CLIP"),
    }
    status = comfy.ui("5")["text"][0]
    assert "warning" not in status, status
    comfy.run({"1": graph["1"], "9": plain, "99": sink("9")})
    assert (comfy.output("9")[0][0] - ref[0][0]).abs().max() > 1e-2  # the embeddings do change the result
    print("SD1.5 embeddings max|diff|/max|ref|:", {k: f"{v:.2e}" for k, v in ratios.items()}, f"run {run.seconds:.1f}s")
    comfy.release()


def test_sdxl_embeddings_match_clip_text_encode_sdxl(comfy, emb_folder):
    comfy.release()
    graph = {
        "1": {"class_type": "DualCLIPLoader", "inputs": {
            "clip_name1": "clip_l.safetensors", "clip_name2": "clip_g.safetensors", "type": "sdxl", "device": "default"}},
        "2": {"class_type": "CLIPTextEncodeSDXL", "inputs": {"clip": ["1", 0], "text_g": SDXL_PROMPT,
                                                             "text_l": SDXL_PROMPT, **SIZES}},
        "3": suite_encode_sdxl("1", SDXL_PROMPT),
        "99": sink("2", "3"),
    }
    run = comfy.run(graph)
    ref = comfy.output("2")
    native = assert_conditioning_close(comfy.output("3"), ref, "SDXL embeddings, native CLIP into ours")
    status = comfy.ui("3")["text"][0]
    assert "embedding cs_sd_four" in status and "this 1280-wide text encoder cannot use it" in status
    comfy.release()
    run2 = comfy.run({"4": suite_loader("checkpoints/sdxl_te.safetensors"), "5": suite_encode_sdxl("4", SDXL_PROMPT), "99": sink("5")})
    mine = assert_conditioning_close(comfy.output("5"), ref, "SDXL embeddings, our loader")
    print(f"SDXL embeddings max|diff|/max|ref|: native CLIP into ours {native:.2e}, our loader {mine:.2e}; "
          f"runs {run.seconds:.1f}s, {run2.seconds:.1f}s")
    comfy.release()


def test_bad_embedding_files_warn_through_the_node_and_never_run_code(comfy, emb_folder):
    folder, marker = emb_folder
    comfy.release()
    comfy.run({"4": suite_loader("checkpoints/sd15_te.safetensors"), "5": suite_encode("4", BAD_PROMPT),
               "6": suite_encode("4", "a cat"), "99": sink("5", "6")})
    assert not os.path.exists(marker), "unpickling an embedding ran code"
    status = comfy.ui("5")["text"][0]
    for name in ("cs_evil_raw.pt", "cs_evil_zip.pt"):
        assert f"warning: embedding {folder / name} contains objects other than weights" in status, status
    assert f"warning: embedding {folder / 'cs_empty.safetensors'} is empty" in status
    assert f"warning: embedding cs_narrow ({folder / 'cs_narrow.safetensors'}) has width 1024" in status
    # All four are left out, as ComfyUI leaves out embeddings it cannot load or use.
    ours_bad = comfy.output("5")
    assert_conditioning_close(ours_bad, comfy.output("6"), "bad embeddings left out", rel=0)
    # ComfyUI's own encoder gives the same (it loads pickles with weights_only too); checked after ours ran.
    # Not with cs_evil_zip: for a zip-format .pt that weights_only refuses and that holds no tensor data,
    # ComfyUI's load_embed falls through to an UnboundLocalError and the whole encode fails.
    native_prompt = BAD_PROMPT.replace(" embedding:cs_evil_zip", "")
    comfy.run({"1": {"class_type": "CLIPLoader", "inputs": {"clip_name": "clip_l.safetensors",
                                                            "type": "stable_diffusion", "device": "default"}},
               "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 0], "text": native_prompt}},
               "99": sink("2")})
    assert_conditioning_close(ours_bad, comfy.output("2"), "bad embeddings vs CLIPTextEncode")
    assert not os.path.exists(marker)
    comfy.release()


def test_a1111_embedding_moves_whole_to_the_next_chunk(comfy, emb_folder):
    text = " ".join(["w"] * 73) + " cs_sd_four end"
    comfy.release()
    comfy.run({"4": suite_loader("checkpoints/sd15_te.safetensors"),
               "5": suite_encode("4", text, chunking="a1111", weighting="a1111"),
               "6": {"class_type": "ClipSuitePromptTokens", "inputs": {"text": text, "chunking": "a1111",
                                                                      "comma_backtrack": 20}},
               "99": sink("5")})
    cond = comfy.output("5")[0][0]
    report = comfy.output("6")
    assert cond.shape == (1, 154, 768)
    assert report.startswith("78 tokens, 2 chunks") and "chunk 1: 73/75" in report and "chunk 2: 5/75" in report
    assert "<cs_sd_four 1/4> | <cs_sd_four 2/4> | <cs_sd_four 3/4> | <cs_sd_four 4/4> | end" in report
    comfy.release()
