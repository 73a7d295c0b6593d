"""Hostile prompts and files: never a crash from deep inside, never a hang, clear messages (DESIGN 12)."""

import threading
import time

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from helpers import tiny_models as tm
from clip_suite.clip_impl.cache import ByteLRUCache
from clip_suite.clip_impl.text.chunking import _EMBEDDING_SPLIT, chunk_prompt, unknown_embedding_comfy
from clip_suite.clip_impl.text.encode import EncodeSettings, encode_prompt
from clip_suite.clip_impl.weights.loading import load_clip
from clip_suite.clip_impl.text.syntax import parse_prompt
from clip_suite.clip_impl.tokenizer import BOS_ID, EOS_ID, get_tokenizer
from clip_suite.clip_impl.weights.files import ModelFileError

PROMPT_CHARS = st.one_of(
    st.characters(),
    st.sampled_from(list("()[]:\\,. 0123456789-") + ["BREAK", " BREAK ", "embedding:x ", "\n"]),
)
prompts = st.lists(PROMPT_CHARS, max_size=400).map("".join) | st.text(max_size=5000)


def expected_ids(text, syntax):
    """Token ids the chunks must hold: each segment (comfy references: each piece) tokenized, BREAKs dropped.

    ``embedding:`` references follow the weighting syntax, whatever the packing: all but A1111's have them.
    """
    tok = get_tokenizer()
    references = "a1111" if syntax == "a1111" else "comfy"
    ids = []
    for seg in parse_prompt(text, syntax):
        if seg.is_break:
            continue
        pieces = [seg.text]
        if references == "comfy":
            parts = _EMBEDDING_SPLIT.split(seg.text)
            pieces = parts[:1] + ["embedding:" + p for p in parts[1:]]
        for piece in pieces:
            if references == "comfy" and piece.startswith("embedding:"):
                # no embeddings folder: the reference is dropped (ComfyUI's rule, checked against ComfyUI
                # in tests/integration/test_comfy_tokenization.py)
                piece = unknown_embedding_comfy(piece[len("embedding:") :])[1]
            ids += [(i, seg.weight) for i in tok.encode(piece)]
    return ids


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=prompts, syntax=st.sampled_from(["comfy", "a1111", "none"]), chunking=st.sampled_from(["comfy", "a1111"]))
def test_any_prompt_chunks_cleanly(text, syntax, chunking):
    chunks = chunk_prompt(text, syntax=syntax, chunking=chunking, comma_backtrack=20)
    assert chunks
    for chunk in chunks:
        ids = chunk.ids()
        assert len(ids) == 77 and ids[0] == BOS_ID and EOS_ID in ids[1:]
        assert all(isinstance(w, float) for w in chunk.weights())
    got = [(t.id, t.weight) for c in chunks for t in c.body]
    assert got == expected_ids(text, syntax)


def test_encode_time_is_linear_in_prompt_length(model_dir):
    model = load_clip(model_dir / "sd15.safetensors")
    short = " ".join(f"word{i % 50}, (tag:1.1)" for i in range(200))  # ~1,000 tokens
    long = " ".join(f"word{i % 50}, (tag:1.1)" for i in range(2000))  # ~10,000 tokens
    assert 900 < sum(len(c.body) for c in chunk_prompt(short)) < 1200

    def timed(text):
        t0 = time.perf_counter()
        out = encode_prompt(model, text, EncodeSettings(), cache=None)
        return time.perf_counter() - t0, out

    timed(short)
    t_short, _ = timed(short)
    t_long, out = timed(long)
    assert out.cond.shape[1] == 77 * out.chunks and torch.isfinite(out.cond).all()
    assert t_long < 25 * t_short + 1.0, f"10x the tokens took {t_long / t_short:.1f}x the time"


@pytest.mark.parametrize(
    "prompt",
    ["((((" * 500, "))))" * 500, "(" * 3000 + "x" + ")" * 3000, "[" * 5000, "\\" * 3000, "embedding:" * 300, "BREAK " * 2000],
)
def test_hostile_prompts_encode_or_fail_clearly(model_dir, prompt):
    model = load_clip(model_dir / "sd15.safetensors")
    for weighting in ("comfy", "a1111"):
        try:
            out = encode_prompt(model, prompt, EncodeSettings(weighting=weighting, chunking="a1111"), cache=None)
        except ValueError as e:
            assert "weight" in str(e)
            continue
        assert torch.isfinite(out.cond).all() and torch.isfinite(out.pooled).all()


def test_concurrent_encodes_equal_serial(model_dir):
    model = load_clip(model_dir / "sdxl.safetensors")
    texts = [f"prompt number {i}, (detail:1.{i})" for i in range(8)]
    serial = [encode_prompt(model, t, EncodeSettings(), cache=None).cond for t in texts]
    cache = ByteLRUCache(200_000)  # small: forces evictions while threads run
    results, errors = [None] * 8, []

    def work(i):
        try:
            for _ in range(3):
                results[i] = encode_prompt(model, texts[i], EncodeSettings(), cache=cache).cond
                assert cache.nbytes <= cache.max_bytes
        except Exception as e:  # noqa: BLE001 - re-raised in the main thread below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for got, want in zip(results, serial):
        assert torch.allclose(got, want, atol=1e-6)
    assert cache.nbytes <= cache.max_bytes


# ---------------------------------------------------------------------------------------- bad files
def test_bad_file_corpus(tmp_path, l_model, g_model):
    good = tm.hf_state(l_model)
    cases = {}
    # A header that lies: one tensor claims fp32 where its bytes are fp16-sized.
    path = tmp_path / "lying_dtype.safetensors"
    save_file({k: v.half() for k, v in good.items()}, str(path))
    path.write_bytes(path.read_bytes().replace(b'"F16"', b'"F32"', 1))
    cases[path] = r"lying_dtype.safetensors: the header says tensor .* F32 .* bytes; the file is corrupt"
    # A header that lies about a shape.
    path = tmp_path / "lying_shape.safetensors"
    save_file({k: v.half() for k, v in good.items()}, str(path))
    path.write_bytes(path.read_bytes().replace(b'"shape":[128]', b'"shape":[129]', 1))
    cases[path] = r"lying_shape.safetensors: the header says tensor"
    # NaN-filled tower.
    nan = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in good.items()}
    save_file(nan, str(tmp_path / "nan.safetensors"))
    cases[tmp_path / "nan.safetensors"] = r"nan.safetensors: tensor .* holds NaN"
    # An SDXL checkpoint with its CLIP-G missing.
    sdxl = tm.hf_state(l_model, "conditioner.embedders.0.transformer.", projection=False)
    save_file(sdxl, str(tmp_path / "sdxl_no_g.safetensors"))
    cases[tmp_path / "sdxl_no_g.safetensors"] = r"sdxl_no_g.safetensors.*CLIP-G"
    # A tower with a layer missing.
    partial = {k: v for k, v in good.items() if ".layers.2." not in k}
    save_file(partial, str(tmp_path / "partial.safetensors"))
    cases[tmp_path / "partial.safetensors"] = r"partial.safetensors.*(incomplete|missing)"
    for path, pattern in cases.items():
        with pytest.raises(ModelFileError, match=pattern):
            load_clip(path)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/statm"), reason="needs /proc (Linux)")
def test_loading_and_unloading_does_not_leak(model_dir):
    import gc

    def cycle():
        model = load_clip(model_dir / "sd15.safetensors", precision="fp32")
        encode_prompt(model, "a cat", EncodeSettings(), cache=None)
        del model
        gc.collect()

    for _ in range(5):  # warm up allocator pools
        cycle()
    before = _rss_bytes()
    for _ in range(50):
        cycle()
    after = _rss_bytes()
    assert after <= before * 1.10, f"RSS grew from {before / 2**20:.0f} MiB to {after / 2**20:.0f} MiB"
