"""Textual-inversion embeddings: file layouts, ComfyUI and A1111 reference syntax, chunking, encoding."""

import copy
import logging
import pickle

import pytest
import torch
from safetensors.torch import save_file

from clip_suite.clip_impl.text.chunking import chunk_prompt, describe_chunks
from clip_suite.clip_impl.text.embeddings import EmbeddingLibrary
from clip_suite.clip_impl.text.encode import EncodeSettings, encode_prompt
from clip_suite.clip_impl.weights.loading import load_clip
from clip_suite.clip_impl.weights.files import ModelFileError
from helpers.recipe_reference import tower_reference

L_W, G_W = 128, 192


@pytest.fixture(scope="module")
def emb_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("embeddings")
    g = torch.Generator().manual_seed(5)
    torch.save({"string_to_param": {"*": torch.randn(2, L_W, generator=g)}, "name": "a1111style", "step": 3}, d / "a1111style.pt")
    save_file({"emb_params": torch.randn(1, L_W, generator=g)}, str(d / "kohya.safetensors"))
    (d / "sub").mkdir()
    save_file({"clip_l": torch.randn(4, L_W, generator=g), "clip_g": torch.randn(4, G_W, generator=g)}, str(d / "sub" / "xl4.safetensors"))
    save_file({"emb_params": torch.randn(2, 100, generator=g)}, str(d / "narrow.safetensors"))
    (d / "empty.safetensors").write_bytes(b"")
    return d


def body(chunks):
    return [(t.id, round(t.weight, 4), t.embedding.name if t.embedding else None) for c in chunks for t in c.body]


def test_layouts_and_tower_choice(emb_dir):
    lib = EmbeddingLibrary([emb_dir])
    assert lib.load(emb_dir / "a1111style.pt").for_tower("l", L_W).vectors.shape == (2, L_W)
    assert lib.load(emb_dir / "kohya.safetensors").for_tower("l", L_W).vectors.shape == (1, L_W)
    xl = lib.load(emb_dir / "sub" / "xl4.safetensors")
    assert xl.for_tower("l", L_W).vectors.shape == (4, L_W) and xl.for_tower("g", G_W).vectors.shape == (4, G_W)


def test_comfy_reference_syntax(emb_dir):
    lib = EmbeddingLibrary([emb_dir])
    chunks = chunk_prompt("a (embedding:xl4:1.2) cat, embedding:kohya.safetensors", resolve_embedding=lib.resolver("l", "comfy", L_W))
    got = body(chunks)
    assert [g for g in got if g[2]] == [(0, 1.2, "xl4")] * 4 + [(0, 1.0, "kohya")]
    assert describe_chunks(chunks)["tokens"] == 1 + 4 + 2 + 1  # "a", 4 vectors, "cat ,", 1 vector


def test_missing_embedding_is_dropped_with_a_warning(emb_dir, caplog):
    lib = EmbeddingLibrary([emb_dir])
    with caplog.at_level(logging.WARNING):
        chunks = chunk_prompt("a embedding:nothere cat", resolve_embedding=lib.resolver("l", "comfy", L_W))
    assert body(chunks) == body(chunk_prompt("a cat"))
    assert "nothere" in caplog.text


def test_reference_cannot_leave_the_folder(emb_dir, tmp_path):
    save_file({"emb_params": torch.randn(1, L_W)}, str(tmp_path / "outside.safetensors"))
    lib = EmbeddingLibrary([emb_dir])
    assert lib.find("../" + tmp_path.name + "/outside") is None


def test_wrong_width_is_ignored_and_keeps_its_place(emb_dir, caplog):
    lib = EmbeddingLibrary([emb_dir])
    with caplog.at_level(logging.WARNING):
        chunks = chunk_prompt("x embedding:narrow y", resolve_embedding=lib.resolver("l", "comfy", L_W))
    assert [t.id for t in chunks[0].body] == [chunk_prompt("x")[0].body[0].id, chunk_prompt("y")[0].body[0].id]
    assert "width 100" in caplog.text


def test_bad_files_warn_and_never_run_code(emb_dir, tmp_path, caplog):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    d = tmp_path / "evil_dir"
    d.mkdir()
    with open(d / "evil.pt", "wb") as f:
        pickle.dump({"string_to_param": {"*": Evil()}}, f)
    (d / "empty.safetensors").write_bytes(b"")
    lib = EmbeddingLibrary([d])
    with caplog.at_level(logging.WARNING):
        chunk_prompt("embedding:evil embedding:empty x", resolve_embedding=lib.resolver("l", "comfy", L_W))
    assert not marker.exists()
    assert "evil.pt contains objects other than weights" in caplog.text and "empty.safetensors is empty" in caplog.text
    with pytest.raises(ModelFileError):
        lib.load(d / "evil.pt")


def test_a1111_bare_word_and_no_split_at_the_edge(emb_dir):
    lib = EmbeddingLibrary([emb_dir])
    resolver = lib.resolver("l", "a1111", L_W)
    chunks = chunk_prompt("a xl4 cat", syntax="a1111", chunking="a1111", resolve_embedding=resolver)
    assert [t.embedding.name if t.embedding else t.id for t in chunks[0].body][1:5] == ["xl4"] * 4
    # 73 words, then a 4-vector embedding: it would straddle the 75-token edge, so it moves whole.
    straddle = " ".join(["w"] * 73) + " xl4 end"
    chunks = chunk_prompt(straddle, syntax="a1111", chunking="a1111", resolve_embedding=resolver)
    assert [len(c.body) for c in chunks] == [73, 5]
    assert all(t.embedding is not None for t in chunks[1].body[:4])


def test_encoding_equals_the_vectors_put_into_the_token_table(model_dir, emb_dir, l_model):
    """Reference: transformers' tower whose embedding rows for spare ids hold the embedding's vectors."""
    lib = EmbeddingLibrary([emb_dir])
    model = load_clip(model_dir / "sd15.safetensors")
    prompt = "a photo of (embedding:xl4:1.2), embedding:a1111style"
    out = encode_prompt(model, prompt, EncodeSettings(), cache=None, embeddings=lib)
    chunks = chunk_prompt(prompt, resolve_embedding=lib.resolver("l", "comfy", L_W))
    ref_model = copy.deepcopy(l_model)
    ids, spare = [], 40000
    with torch.no_grad():
        table = ref_model.text_model.embeddings.token_embedding.weight
        for chunk in chunks:
            row = chunk.ids()
            for pos, tok in chunk.embeddings():
                table[spare] = tok.embedding.vectors[tok.index]
                row[pos] = spare
                spare += 1
            ids.append(row)
    cond, _ = tower_reference(ref_model, ids, [c.weights() for c in chunks], 4, True, 49407)
    assert (out.cond - cond).abs().max() <= 1e-5 * cond.abs().max()


@pytest.mark.parametrize("weighting,chunking,prompt", [
    ("a1111", "comfy", "a (xl4:1.2) cat"),  # A1111 syntax: bare names, with ComfyUI's packing
    ("comfy", "a1111", "a (embedding:xl4:1.2) cat"),  # ComfyUI syntax with A1111's packing
    ("none", "comfy", "a embedding:xl4 cat"),  # plain text: ComfyUI's references still work
])
def test_weighting_syntax_decides_the_reference_rule(model_dir, emb_dir, weighting, chunking, prompt):
    lib = EmbeddingLibrary([emb_dir])
    model = load_clip(model_dir / "sd15.safetensors")
    out = encode_prompt(model, prompt, EncodeSettings(weighting=weighting, chunking=chunking), cache=None, embeddings=lib)
    chunks = chunk_prompt(prompt, syntax=weighting, chunking=chunking, resolve_embedding=lib.resolver("l", weighting, L_W))
    assert [t.embedding.name for t in chunks[0].body if t.embedding] == ["xl4"] * 4
    assert out.chunks == 1 and out.warnings == []


def test_resolver_warnings_reach_the_encoding(model_dir, emb_dir):
    lib = EmbeddingLibrary([emb_dir])
    model = load_clip(model_dir / "sd15.safetensors")
    out = encode_prompt(model, "embedding:narrow embedding:empty embedding:nothere x", EncodeSettings(), cache=None,
                        embeddings=lib)
    text = "\n".join(out.warnings)
    assert "has width 100" in text and "is empty (0 bytes)" in text and "embedding:nothere is not in" in text
    assert len(out.warnings) == 3


def test_library_fingerprint_follows_the_files(tmp_path):
    save_file({"emb_params": torch.ones(1, L_W)}, str(tmp_path / "a.safetensors"))
    lib = EmbeddingLibrary([tmp_path])
    assert lib.is_current([tmp_path]) and not lib.is_current([tmp_path, tmp_path / "other"])
    (tmp_path / "notes.txt").write_text("not an embedding")
    assert lib.is_current([tmp_path])  # other files do not matter
    save_file({"emb_params": torch.ones(2, L_W)}, str(tmp_path / "a.safetensors"))  # rewritten in place
    assert not lib.is_current([tmp_path])


def test_one_resolver_serves_both_rules(emb_dir):
    """The chunker names the rule with each call, so a resolver made for either syntax works with any settings."""
    lib = EmbeddingLibrary([emb_dir])
    for made_for in ("comfy", "a1111"):
        resolver = lib.resolver("l", made_for, L_W)
        comfy = chunk_prompt("a embedding:xl4 cat", syntax="comfy", chunking="a1111", resolve_embedding=resolver)
        a1111 = chunk_prompt("a xl4 cat", syntax="a1111", chunking="comfy", resolve_embedding=resolver)
        assert body(comfy) == body(a1111) and [b[2] for b in body(comfy)][1:5] == ["xl4"] * 4
