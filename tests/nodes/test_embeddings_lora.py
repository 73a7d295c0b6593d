"""Embeddings and LoRA through the nodes (standalone host, no ComfyUI): the host's embeddings folder and
its refresh, warnings on the node, the token report, and ClipSuiteLoraLoader."""

import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

from clip_suite.clip_impl.text.embeddings import EmbeddingLibrary
from clip_suite.clip_impl.text.encode import EncodeSettings, encode_prompt
from clip_suite.clip_impl.weights.loading import load_clip
from clip_suite.clip_impl.weights import apply_loras, read_lora
from clip_suite.nodes import NODE_CLASS_MAPPINGS as NODES
from clip_suite.nodes import host
from helpers.shared_helpers import pinned_host

ENCODE = dict(clip_skip=0, chunking="comfy", comma_backtrack=20, weighting="comfy", pooled="first_chunk",
              empty_prompt="encode")
SIZES = dict(width=1024, height=1024, crop_w=0, crop_h=0, target_width=1024, target_height=1024)


@pytest.fixture()
def root(tmp_path, model_dir):
    """A models folder: two checkpoints, embeddings (SD1 and SDXL files) and one kohya LoRA."""
    (tmp_path / "checkpoints").mkdir()
    for name in ("sd15.safetensors", "sdxl.safetensors"):
        os.symlink(model_dir / name, tmp_path / "checkpoints" / name)
    emb = tmp_path / "embeddings"
    emb.mkdir()
    g = torch.Generator().manual_seed(3)
    save_file({"emb_params": torch.randn(1, 128, generator=g)}, str(emb / "one.safetensors"))
    save_file({"clip_l": torch.randn(4, 128, generator=g), "clip_g": torch.randn(4, 192, generator=g)},
              str(emb / "xl4.safetensors"))
    loras = tmp_path / "loras" / "styles"
    loras.mkdir(parents=True)
    lora = {}
    for layer in range(4):
        name = f"lora_te_text_model_encoder_layers_{layer}_self_attn_v_proj"
        lora[f"{name}.lora_up.weight"] = (torch.randn(128, 2, generator=g) * 0.3).half()
        lora[f"{name}.lora_down.weight"] = (torch.randn(2, 128, generator=g) * 0.3).half()
        lora[f"{name}.alpha"] = torch.tensor(1.0)
    save_file(lora, str(loras / "te.safetensors"))
    save_file({"lora_unet_mid_block_proj_in.lora_up.weight": torch.zeros(4, 2),
               "lora_unet_mid_block_proj_in.lora_down.weight": torch.zeros(2, 4)}, str(loras / "unet_only.safetensors"))
    with pinned_host(tmp_path):
        yield tmp_path


def load(model):
    return NODES["ClipSuiteLoader"]().load(model, "none", "auto", "auto", "cpu")["result"][0]


def encode(clip, text, **kw):
    out = NODES["ClipSuiteTextEncode"]().encode(clip, text, **{**ENCODE, **kw})
    return out["result"][0][0][0], out["ui"]["text"][0]  # cond (1, 77n, C), status


def test_encoders_use_the_embeddings_folder(root, model_dir):
    clip = load("checkpoints/sdxl.safetensors")
    text = "a (embedding:xl4:1.2) fox, embedding:one"
    out = NODES["ClipSuiteTextEncodeSDXL"]().encode(clip, text, "", clip_skip_applies_to="both", **ENCODE, **SIZES)
    cond, opts = out["result"][0][0]
    library = EmbeddingLibrary([root / "embeddings"])
    ref = encode_prompt(load_clip(model_dir / "sdxl.safetensors"), text, EncodeSettings(), cache=None, embeddings=library)
    assert torch.equal(cond, ref.cond) and torch.equal(opts["pooled_output"], ref.pooled)
    # "one" is 128 wide: CLIP-L uses it, CLIP-G (192) cannot, and the node says so.
    assert "warning: embedding one" in out["ui"]["text"][0] and "cannot use it" in out["ui"]["text"][0]
    plain = encode_prompt(load_clip(model_dir / "sdxl.safetensors"), text, EncodeSettings(), cache=None)
    assert not torch.equal(plain.cond, ref.cond)


def test_library_is_kept_and_refreshed_when_the_folder_changes(root):
    first = host.get_host().embedding_library()
    assert first is host.get_host().embedding_library()  # nothing changed: the same library (loaded files kept)
    clip = load("checkpoints/sd15.safetensors")
    _, status = encode(clip, "embedding:later cat")
    assert "embedding:later is not in the embeddings folders" in status
    save_file({"emb_params": torch.ones(2, 128)}, str(root / "embeddings" / "later.safetensors"))
    assert host.get_host().embedding_library() is not first
    cond, status = encode(clip, "embedding:later cat")
    assert "later" not in status and cond.shape == (1, 77, 128)
    report = NODES["ClipSuitePromptTokens"]().report("embedding:later cat", "comfy", 20)["result"][0]
    assert report.startswith("3 tokens, 1 chunk") and "<later 1/2> | <later 2/2> | cat" in report


def test_environment_folder_for_the_standalone_host(root, tmp_path_factory, monkeypatch):
    other = tmp_path_factory.mktemp("env_embeddings")
    save_file({"emb_params": torch.ones(3, 128)}, str(other / "envemb.safetensors"))
    monkeypatch.setenv(host.EMBEDDINGS_ENV, str(other))
    report = NODES["ClipSuitePromptTokens"]().report("x embedding:envemb y", "comfy", 20)["result"][0]
    assert report.startswith("5 tokens")  # x, 3 vectors, y
    monkeypatch.setenv(host.EMBEDDINGS_ENV, "")
    monkeypatch.setattr(host.get_host(), "models_dir", None)
    assert host.get_host().embedding_library() is None  # no folder: references are dropped as ComfyUI drops unknown ones


def test_bad_embedding_files_warn_on_the_node_and_never_run_code(root, tmp_path):
    marker = tmp_path / "code_ran"

    class Evil:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    with open(root / "embeddings" / "evil.pt", "wb") as f:
        pickle.dump({"string_to_param": {"*": Evil()}}, f)
    (root / "embeddings" / "empty.safetensors").write_bytes(b"")
    save_file({"emb_params": torch.ones(2, 100)}, str(root / "embeddings" / "narrow.safetensors"))
    clip = load("checkpoints/sd15.safetensors")
    cond, status = encode(clip, "a embedding:evil embedding:empty embedding:narrow cat")
    assert not marker.exists()
    evil, empty, narrow = (str(root / "embeddings" / n) for n in ("evil.pt", "empty.safetensors", "narrow.safetensors"))
    assert f"warning: embedding {evil} contains objects other than weights" in status
    assert f"warning: embedding {empty} is empty" in status
    assert f"warning: embedding narrow ({narrow}) has width 100" in status
    assert "not in the embeddings folders" not in status  # they are there, just unusable
    ref, _ = encode(clip, "a cat")
    assert torch.equal(cond, ref)  # all three left out, as ComfyUI leaves them out


def test_a1111_embedding_moves_whole_past_the_chunk_edge(root, model_dir):
    clip = load("checkpoints/sd15.safetensors")
    text = " ".join(["w"] * 73) + " xl4 end"
    cond, status = encode(clip, text, weighting="a1111", chunking="a1111")
    assert cond.shape == (1, 154, 128) and status.startswith("SD1.x: 2 chunks")
    report = NODES["ClipSuitePromptTokens"]().report(text, "a1111", 20)["result"][0]
    assert "chunk 1: 73/75 tokens" in report and "chunk 2: 5/75 tokens" in report
    library = EmbeddingLibrary([root / "embeddings"])
    settings = EncodeSettings(weighting="a1111", chunking="a1111")
    ref = encode_prompt(load_clip(model_dir / "sd15.safetensors"), text, settings, cache=None, embeddings=library)
    assert torch.equal(cond, ref.cond)


def test_lora_node_matches_the_library_and_leaves_the_input(root, model_dir):
    node = NODES["ClipSuiteLoraLoader"]
    assert node.INPUT_TYPES()["required"]["lora_name"][0] == ["styles/te.safetensors", "styles/unet_only.safetensors"]
    clip = load("checkpoints/sd15.safetensors")
    before, _ = encode(clip, "a red fox")
    out = node().apply(clip, "styles/te.safetensors", 0.8)
    patched = out["result"][0]
    assert "LoRA te.safetensors at strength 0.8: CLIP-L 4 weights, rank 2" in out["ui"]["text"][0]
    cond, _ = encode(patched, "a red fox")
    lora = read_lora(root / "loras" / "styles" / "te.safetensors")
    ref = apply_loras(load_clip(model_dir / "sd15.safetensors"), [(lora, 0.8)]).model
    assert torch.equal(cond, encode_prompt(ref, "a red fox", EncodeSettings(), cache=None).cond)
    after, _ = encode(clip, "a red fox")
    assert torch.equal(before, after) and not torch.equal(before, cond)
    unet = node().apply(clip, "styles/unet_only.safetensors", 1.0)
    assert unet["result"][0] is clip and "has no text-encoder weights" in unet["ui"]["text"][0]


def test_lora_node_refuses_paths_outside_and_native_clips(root, tmp_path):
    node = NODES["ClipSuiteLoraLoader"]()
    clip = load("checkpoints/sd15.safetensors")
    with pytest.raises(ValueError, match="is not in the loras folders"):
        node.apply(clip, "../checkpoints/sd15.safetensors", 1.0)

    class NativeClip:
        cond_stage_model = patcher = None

    with pytest.raises(TypeError, match="use LoraLoader"):
        node.apply(NativeClip(), "styles/te.safetensors", 1.0)
