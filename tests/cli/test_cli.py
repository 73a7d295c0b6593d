"""The command line, run as users run it: ``python -m clip_suite ...`` in a subprocess."""

import json
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open

from clip_suite.clip_impl.text.encode import EncodeSettings, encode_prompt
from clip_suite.clip_impl.weights.loading import load_clip


def cli(*args):
    return subprocess.run([sys.executable, "-m", "clip_suite", *map(str, args)], capture_output=True, text=True, timeout=300)


def test_tokens_json():
    r = cli("tokens", "--json", "a photo of a cat BREAK " + "word " * 80)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["tokens"] == 85 and report["chunks"] == 3 and report["chunk_tokens"] == [5, 75, 5]
    assert report["boundaries"][0] == "photo of a cat"


def test_tokens_text_and_a1111_backtrack():
    prompt = " ".join(["a"] * 70) + " , " + " ".join(["b"] * 14)
    r = cli("tokens", "--chunking", "a1111", "--comma-backtrack", "20", prompt)
    assert r.returncode == 0 and "85 tokens, 2 chunks" in r.stdout and "chunk 1: 71/75" in r.stdout


def test_encode_sdxl_writes_cond_pooled_and_metadata(model_dir, tmp_path):
    out = tmp_path / "c.safetensors"
    r = cli("encode", "--model", model_dir / "sdxl.safetensors", "--prompt", "a (cat:1.3) BREAK garden", "--clip-skip", "1", "--out", out)
    assert r.returncode == 0, r.stderr
    assert "sdxl: 2 chunks" in r.stdout and "layer 2/4" in r.stdout
    with safe_open(str(out), "pt") as f:
        cond, pooled, meta = f.get_tensor("cond"), f.get_tensor("pooled"), f.metadata()
    assert cond.dtype == torch.float32 and cond.shape == (1, 154, 320) and pooled.shape == (1, 96)
    assert meta["architecture"] == "sdxl" and meta["chunks"] == "2"
    assert json.loads(meta["layers"])["g"] == {"layer": 3, "layer_norm": False, "of": 5}
    ref = encode_prompt(load_clip(model_dir / "sdxl.safetensors"), "a (cat:1.3) BREAK garden", EncodeSettings(clip_skip=1), cache=None)
    assert torch.allclose(cond, ref.cond, atol=1e-6) and torch.allclose(pooled, ref.pooled, atol=1e-6)


def test_encode_pair_of_standalone_files(model_dir, tmp_path):
    out = tmp_path / "p.safetensors"
    r = cli("encode", "--model", model_dir / "clip_l.safetensors", "--model-2", model_dir / "clip_g.safetensors", "--prompt", "x", "--out", out)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize(
    "args,message",
    [
        (["--clip-skip", "9"], "clip_skip 9 is out of range"),
        (["--model", "/nonexistent.safetensors"], "does not exist"),
    ],
)
def test_bad_input_exits_2_with_one_line(model_dir, tmp_path, args, message):
    base = {"--model": str(model_dir / "sd15.safetensors"), "--prompt": "x", "--out": str(tmp_path / "o.safetensors")}
    for i in range(0, len(args), 2):
        base[args[i]] = args[i + 1]
    r = cli("encode", *[x for kv in base.items() for x in kv])
    assert r.returncode == 2 and message in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_bad_option_exits_2():
    assert cli("tokens", "--comma-backtrack", "75", "x").returncode == 2


def test_tokens_count_embedding_vectors_in_either_syntax(tmp_path):
    from safetensors.torch import save_file

    save_file({"clip_l": torch.zeros(4, 768), "clip_g": torch.zeros(4, 1280)}, str(tmp_path / "xlfour.safetensors"))
    comfy = cli("tokens", "--json", "--embeddings", tmp_path, "a (embedding:xlfour:1.2) cat")
    assert comfy.returncode == 0, comfy.stderr
    assert json.loads(comfy.stdout)["tokens"] == 6  # a, 4 vectors, cat
    # The weighting syntax decides how embeddings are named, whatever the packing (mixed settings used to crash).
    for weighting, chunking, prompt in (("a1111", "comfy", "a xlfour cat"), ("comfy", "a1111", "a embedding:xlfour cat")):
        mixed = cli("tokens", "--json", "--embeddings", tmp_path, "--weighting", weighting, "--chunking", chunking, prompt)
        assert mixed.returncode == 0, mixed.stderr
        assert json.loads(mixed.stdout)["tokens"] == 6, (weighting, chunking)


def test_encode_with_embeddings_and_mixed_settings(model_dir, tmp_path):
    from safetensors.torch import save_file

    save_file({"emb_params": torch.ones(2, 128)}, str(tmp_path / "two.safetensors"))
    out = tmp_path / "e.safetensors"
    r = cli("encode", "--model", model_dir / "sd15.safetensors", "--embeddings", tmp_path, "--prompt",
            "a (embedding:two:1.2) cat, embedding:missing", "--chunking", "a1111", "--out", out)
    assert r.returncode == 0, r.stderr
    assert "embedding:missing is not in the embeddings folders" in r.stderr
    with safe_open(str(out), "pt") as f:
        cond = f.get_tensor("cond")
    from clip_suite.clip_impl.text.embeddings import EmbeddingLibrary

    ref = encode_prompt(load_clip(model_dir / "sd15.safetensors"), "a (embedding:two:1.2) cat,",
                        EncodeSettings(chunking="a1111"), cache=None, embeddings=EmbeddingLibrary([tmp_path]))
    assert torch.equal(cond, ref.cond)
