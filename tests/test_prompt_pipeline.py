"""One prompt pipeline: the encoders, the CLI, the web route and the Prompt Tokens node cut the same prompt with
the same settings (chunking, comma_backtrack, weighting, embeddings) into the same chunks."""

from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors.torch import save_file

from helpers import tiny_models as tm
from clip_suite.cli import main
from clip_suite.clip_impl.text import encode as encode_module
from clip_suite.clip_impl.text.chunking import describe_chunks
from clip_suite.clip_impl.text.embeddings import EmbeddingLibrary
from clip_suite.clip_impl.text.encode import EncodeSettings, encode_prompt
from clip_suite.clip_impl.weights.loading import load_clip
from clip_suite.clip_impl.text.pipeline import WEIGHTING_SYNTAX, WEIGHTINGS, prompt_chunks, weighting_syntax
from clip_suite.nodes.prompt_tokens import token_report
from clip_suite.nodes.hosting.tokens_route import parse_request, tokens_report

PROMPTS = [
    "a photo of a cat",
    "",
    "first BREAK second BREAK BREAK third",
    "(masterpiece:1.2), best quality, ((detailed)), [blurry], \\(literal\\)",
    "an embedding:stars4 sky, stars4 again, (embedding:stars4:1.3) glow",
    ", ".join(f"tag{i} (detail:1.{i % 9})" for i in range(60)) + " BREAK tail words",
    " ".join(["a"] * 70) + " , " + " ".join(["b"] * 20),
]
# comma_backtrack only moves tokens under a1111 chunking
SETTINGS = [("comfy", 20, w) for w in WEIGHTINGS] + [("a1111", b, w) for b in (0, 20) for w in WEIGHTINGS]


@pytest.fixture(scope="module")
def emb_folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("pipeline_embeddings")
    g = torch.Generator().manual_seed(5)
    save_file({"emb_params": torch.randn(4, tm.L_WIDTH, generator=g)}, str(d / "stars4.safetensors"))
    return d


@pytest.fixture(scope="module")
def sd15(model_dir):
    return load_clip(model_dir / "sd15.safetensors")


def test_one_weighting_table():
    assert WEIGHTINGS == ("comfy", "a1111", "a1111_no_norm", "none")
    assert [weighting_syntax(w) for w in WEIGHTINGS] == ["comfy", "a1111", "a1111", "none"]
    assert set(WEIGHTING_SYNTAX) == set(WEIGHTINGS)
    with pytest.raises(ValueError, match="weighting='nope'; use one of comfy, a1111, a1111_no_norm, none"):
        weighting_syntax("nope")


def _node_counts(report: str) -> list[int]:
    return [int(n) for n in re.findall(r"^chunk \d+: (\d+)/75 tokens", report, flags=re.M)]


@pytest.mark.parametrize("chunking,backtrack,weighting", SETTINGS)
def test_four_callers_agree(sd15, emb_folder, monkeypatch, capsys, chunking, backtrack, weighting):
    library = EmbeddingLibrary([emb_folder])
    used = []  # the chunks the encoder was given, seen through the one pipeline it calls
    real = encode_module.prompt_chunks

    def spy(*args, **kwargs):
        found = real(*args, **kwargs)
        used.append(found.chunks)
        return found

    monkeypatch.setattr(encode_module, "prompt_chunks", spy)
    settings = EncodeSettings(chunking=chunking, comma_backtrack=backtrack, weighting=weighting)
    for text in PROMPTS:
        used.clear()
        out = encode_prompt(sd15, text, settings, cache=None, embeddings=library)
        assert len(used) == 1 and out.chunks == len(used[0])
        encoder = describe_chunks(used[0])

        request = {"text": text, "chunking": chunking, "comma_backtrack": backtrack, "weighting": weighting}
        route = tokens_report(parse_request(json.dumps(request).encode()), library)

        argv = ["tokens", "--json", "--chunking", chunking, "--comma-backtrack", str(backtrack),
                "--weighting", weighting, "--embeddings", str(emb_folder), text]
        assert main(argv) == 0
        cli = json.loads(capsys.readouterr().out)

        node = token_report(text, chunking, backtrack, library, weighting)
        where = f"{text[:40]!r} with {chunking}/{backtrack}/{weighting}"
        assert route == encoder, where
        assert cli == encoder, where
        assert _node_counts(node) == encoder["chunk_tokens"], where
        assert node.startswith(f"{encoder['tokens']} tokens, {encoder['chunks']} chunk"), where


def test_embedding_rule_follows_the_weighting(emb_folder):
    """The same text counts the embedding as 4 vectors where its syntax names it, as words elsewhere."""
    library = EmbeddingLibrary([emb_folder])
    counts = {w: describe_chunks(prompt_chunks("embedding:stars4 x", weighting=w, embeddings=library).chunks)
              for w in ("comfy", "a1111")}
    assert counts["comfy"]["tokens"] == 4 + 1  # embedding:name -> its 4 vectors
    bare = {w: describe_chunks(prompt_chunks("stars4 x", weighting=w, embeddings=library).chunks)
            for w in ("comfy", "a1111")}
    assert bare["a1111"]["tokens"] == 4 + 1  # A1111 names embeddings by their bare file name
    assert bare["comfy"]["tokens"] != 4 + 1


def test_prompt_tokens_auto_is_the_chunkings_weighting(emb_folder):
    library = EmbeddingLibrary([emb_folder])
    text = "(a:1.3) [b] stars4 embedding:stars4"
    for chunking in ("comfy", "a1111"):
        assert token_report(text, chunking, 20, library) == token_report(text, chunking, 20, library, chunking)
