"""Our a1111 modes against AUTOMATIC1111 1.10's own code (DESIGN 4, "A1111 details").

Skipped unless ``A1111_MODULES`` names a folder with A1111 1.10's ``prompt_parser.py``,
``sd_hijack_clip.py`` and ``sd_emphasis.py`` (see ``a1111_harness.py`` for where to get them; they are
loaded at run time, never copied here). Three stages, each on hand-picked prompts and a seeded fuzz:

- parse: ``parse_prompt_attention`` vs our ``parse_a1111`` (texts, weights, BREAK markers), exactly;
- chunking: ``tokenize_line`` chunks (77 ids and 77 multipliers) vs ``chunk_prompt(syntax="a1111",
  chunking="a1111", comma_backtrack=N)`` with ``opts.comma_padding_backtrack = N``, exactly;
- encoding: ``FrozenCLIPEmbedderWithCustomWords.forward`` on a tiny random transformers CLIP-L vs our
  ``encode_prompt`` on the same weights loaded from an SD1 checkpoint: emphasis "Original" = weighting
  ``a1111``, "No norm" = ``a1111_no_norm``, ``CLIP_stop_at_last_layers`` N = our ``clip_skip`` N-1;
  max |ours - A1111| <= 1e-5 x max |A1111| in fp32.

Where we differ from A1111 on purpose (not compared): a weight literal that Python's float() refuses
(``(x:1.2.3)``) crashes A1111's parser, ours keeps the text; a literal that overflows to inf is text for us;
a chunk whose weighted mean is exactly 0 turns into inf/NaN in A1111, ours leaves that chunk unrescaled.
"""

from __future__ import annotations

import random

import pytest
import torch
from a1111_harness import Wrapped, legacy_text_model, load, modules_dir
from transformers import CLIPTokenizer

from helpers import tiny_models as tm
from clip_suite.clip_impl.text.chunking import chunk_prompt
from clip_suite.clip_impl.text.encode import EncodeSettings, encode_prompt
from clip_suite.clip_impl.weights.loading import load_clip
from clip_suite.clip_impl.text.syntax import parse_a1111
from clip_suite.clip_impl.tokenizer import read_bpe_vocab

NEEDS_COMFYUI = False  # tests/integration/conftest.py: this file needs A1111's files, not ComfyUI
pytestmark = pytest.mark.skipif(
    modules_dir() is None,
    reason="needs A1111 1.10's modules/ (prompt_parser.py, sd_hijack_clip.py, sd_emphasis.py): set A1111_MODULES",
)

BACKTRACKS = (0, 1, 20, 74)
PARSE_FUZZ, CHUNK_FUZZ, ENCODE_FUZZ = 4000, 250, 3


def words(n, w="a"):
    return " ".join([w] * n)


PROMPTS = [
    "",
    "a photo of a cat",
    "a (cat)s",
    "((x)) [y] [[z]] ((w:1.3)) (v:0.5) (u:-0.5)",
    "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
    "(unclosed [also",
    "stray) closers] here:1.2)",
    "\\(literal\\) \\[x\\] \\\\ back\\slash \\",
    "a BREAK b",
    "BREAK a",
    "a BREAK",
    "a BREAK BREAK b",
    "BREAK",
    "BREAK BREAK",
    "(a BREAK b:1.2)",
    "(a BREAK b)",
    "(a BREAK b:1)",
    "[(a BREAK b)]",
    "(a BREAK b:0)",
    "(BREAK:-1)",
    "aBREAK Break BREAKs a:BREAK a,BREAK",
    "a\nBREAK\nb",
    "(x:+.5) (y: 2 ) (z :1.)",
    words(75) + " BREAK b",
    words(74) + " BREAK b",
    words(76) + " BREAK b",
    words(75) + " BREAK",
    words(75) + ", b",
    words(74) + ", b c",
    words(70) + ", (" + words(10, "b") + ":1.3)",
    words(60) + ", " + words(20, "b") + ", " + words(30, "c"),
    ",".join(["a"] * 120),
    ", ".join(["masterpiece", "best quality", "(detailed:1.2)", "[blurry]"] * 20),
    "BREAK " + words(80) + " BREAK BREAK " + words(10, "b") + " BREAK",
    "(" + words(100) + ", " + words(40, "b") + " BREAK c)",
    ", ".join(["a very (detailed:1.3) painting of a [cat] in a garden"] * 8) + ", (blurry:0.8)",
]

# Prompt pieces for the fuzz: syntax characters, numbers, BREAK spellings, commas, words, odd characters.
PARSE_PIECES = [
    "(", ")", "[", "]", ":", "\\", " ", ",", "a", "cat", "BREAK", " BREAK ", "1.2", "0.5", "-1", ".", "+",
    "\n", "é", "_", "0", "1", "  ", ":1.1)", "\\(", "\\)", "\\\\", "日本", "\t", "break",
]  # fmt: skip
CHUNK_PIECES = [
    "a", "cat", "masterpiece", ",", ", ", " , ", ",,", "BREAK", " BREAK ", "(", ")", "[", "]", ":1.3)",
    "(b:0.8)", "photorealistic", "\\(", "\\", " ", "hello world", "1girl", "é", "日本", ".", ";", "😀",
]  # fmt: skip


def fuzz(pieces, count, max_pieces, seed):
    rng = random.Random(seed)
    return ["".join(rng.choice(pieces) for _ in range(rng.randint(0, max_pieces))) for _ in range(count)]


def chunk_fuzz(count, seed):
    rng = random.Random(seed)
    sizes = [rng.randint(0, rng.choice((10, 80, 200, 400))) for _ in range(count)]
    return [" ".join(rng.choice(CHUNK_PIECES) for _ in range(n)) for n in sizes]


def edge_prompts():
    """A comma, a double comma, a BREAK or a weighted run at every position around the chunk edge."""
    out = []
    for p in [0, 1, 2, 10, 30, *range(55, 80)]:
        for tail in (1, 30):
            out += [
                words(p) + " , " + words(tail, "b"),
                words(p) + " ,, " + words(tail, "b"),
                words(p) + " BREAK " + words(tail, "b"),
                words(p) + ", BREAK " + words(tail, "b"),
                words(p) + ", (" + words(tail, "b") + ":1.2), c",
                "(" + words(p) + " BREAK " + words(tail, "b") + ")",
                words(p) + ", " + words(tail, "b") + " BREAK",
            ]
    return out


@pytest.fixture(scope="module")
def a1111():
    with load(modules_dir()) as loaded:
        yield loaded


@pytest.fixture(scope="module")
def hf_tokenizer():
    vocab, merges = read_bpe_vocab()
    return CLIPTokenizer(vocab=vocab, merges=list(merges))


@pytest.fixture(scope="module")
def embedder(a1111, hf_tokenizer, l_model):
    _, clip, opts, hijack = a1111
    return clip.FrozenCLIPEmbedderWithCustomWords(Wrapped(hf_tokenizer, legacy_text_model(l_model.text_model)), hijack)


@pytest.fixture
def opts(a1111):
    """A1111's options, reset to 1.10's defaults for each test."""
    _, _, opts, _ = a1111
    opts.__init__()
    return opts


# --------------------------------------------------------------------------------------------- parse
def ours_parsed(text):
    return [["BREAK", -1] if s.is_break else [s.text, s.weight] for s in parse_a1111(text)]


def compare_parse(parser, texts):
    """Returns (compared, refused by A1111); asserts exact agreement on the rest."""
    compared = refused = 0
    for text in texts:
        ours = ours_parsed(text)  # never raises, whatever A1111 does
        try:
            ref = parser.parse_prompt_attention(text)
        except ValueError:  # e.g. "(x:1.2.3)": float() refuses the literal and A1111's parser crashes
            refused += 1
            continue
        assert ours == ref, f"parse {text!r}:\n ours {ours}\n A1111 {ref}"
        compared += 1
    return compared, refused


def test_parse_hand_picked(a1111):
    compared, refused = compare_parse(a1111[0], PROMPTS)
    assert (compared, refused) == (len(PROMPTS), 0)


def test_parse_fuzz(a1111):
    compared, refused = compare_parse(a1111[0], fuzz(PARSE_PIECES, PARSE_FUZZ, 30, seed=1))
    assert compared > 0.99 * PARSE_FUZZ, f"only {compared} of {PARSE_FUZZ} parsed by A1111"


# ------------------------------------------------------------------------------------------ chunking
def compare_chunks(embedder, opts, texts, backtracks=BACKTRACKS):
    """Asserts identical ids and multipliers; returns how many prompts had a comma backtrack move tokens."""
    moved = set()
    for backtrack in backtracks:
        opts.comma_padding_backtrack = backtrack
        for text in texts:
            ref_chunks, _ = embedder.tokenize_line(text)
            ref = [(c.tokens, c.multipliers) for c in ref_chunks]
            chunks = chunk_prompt(text, syntax="a1111", chunking="a1111", comma_backtrack=backtrack)
            ours = [(c.ids(), c.weights()) for c in chunks]
            assert len(ours) == len(ref), f"N={backtrack} {text[:200]!r}: {len(ours)} chunks, A1111 {len(ref)}"
            for i, (o, r) in enumerate(zip(ours, ref)):
                assert o[0] == r[0], f"N={backtrack} {text[:200]!r}: chunk {i} ids differ"
                assert o[1] == r[1], f"N={backtrack} {text[:200]!r}: chunk {i} multipliers differ"
            if backtrack and any(0 < len(c.body) < 75 for c in chunks[:-1]):
                moved.add(text)
    return len(moved)


def test_chunking_hand_picked(embedder, opts):
    assert compare_chunks(embedder, opts, PROMPTS) > 0


def test_chunking_at_the_chunk_edge(embedder, opts):
    assert compare_chunks(embedder, opts, edge_prompts()) > 0


def test_chunking_fuzz(embedder, opts):
    texts = chunk_fuzz(CHUNK_FUZZ, seed=2) + fuzz(PARSE_PIECES, CHUNK_FUZZ, 60, seed=3)
    texts = [t for t in texts if _a1111_parses(embedder, t)]
    assert len(texts) > 1.9 * CHUNK_FUZZ
    assert compare_chunks(embedder, opts, texts) > 0


def _a1111_parses(embedder, text):
    try:
        embedder.tokenize_line(text)
    except ValueError:
        return False
    return True


# ------------------------------------------------------------------------------------------ encoding
@pytest.fixture(scope="module")
def sd1_model(tmp_path_factory, l_model):
    """Our loader on an SD1 checkpoint holding the same tiny CLIP-L as ``embedder``."""
    return load_clip(tm.write_sd1_checkpoint(tmp_path_factory.mktemp("a1111") / "sd15.safetensors", l_model))


ENCODE_PROMPTS = [
    "",
    "a photo of a cat",
    "a (photo:1.5) of a [cat]",
    "a (cat)s",
    "((x)) [y] [[z]] ((w:1.3)) (v:0.5) (u:-0.5)",
    "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
    "\\(literal\\) \\[x\\] \\\\ back\\slash \\",
    "BREAK a",
    "a BREAK BREAK (b:1.2)",
    "(a BREAK b:1.2)",
    "(a BREAK b:1)",
    "(x:0) y BREAK (z:0)",
    words(70) + ", (" + words(10, "b") + ":1.3)",
    ", ".join(["a very (detailed:1.3) painting of a [cat] in a garden"] * 8) + ", (blurry:0.8)",
]


def compare_encoding(embedder, opts, model, text, stop_at, emphasis, weighting):
    opts.CLIP_stop_at_last_layers, opts.emphasis = stop_at, emphasis
    with torch.inference_mode():
        ref = embedder([text])
    settings = EncodeSettings(clip_skip=stop_at - 1, weighting=weighting, chunking="a1111")
    ours = encode_prompt(model, text, settings, cache=None).cond
    assert ours.shape == ref.shape, f"{text[:80]!r}: shape {tuple(ours.shape)}, A1111 {tuple(ref.shape)}"
    scale = ref.abs().max().item()
    diff = (ours - ref).abs()
    assert diff.max().item() <= 1e-5 * scale, (
        f"{text[:80]!r} stop_at={stop_at} {emphasis}: max diff {diff.max().item():.3g}, "
        f"mean {diff.mean().item():.3g} (A1111 max {scale:.3g})"
    )
    return diff.max().item() / scale


@pytest.mark.parametrize("stop_at", [1, 2, 3])
@pytest.mark.parametrize("emphasis,weighting", [("Original", "a1111"), ("No norm", "a1111_no_norm")])
def test_encoding(embedder, opts, sd1_model, stop_at, emphasis, weighting):
    texts = ENCODE_PROMPTS + chunk_fuzz(ENCODE_FUZZ, seed=4)
    for text in texts:
        compare_encoding(embedder, opts, sd1_model, text, stop_at, emphasis, weighting)


def test_emphasis_none_without_break_is_our_none(embedder, opts, sd1_model):
    """A1111's emphasis "None" is not our weighting ``none``, and we do not make it so.

    "None" hands A1111's tokenizer the whole line as one run: brackets, backslashes and BREAK are all plain
    text. Our ``none`` keeps brackets and backslashes as text too, but BREAK still closes a chunk (DESIGN 4),
    so the two agree only on prompts without the word BREAK; that is what this test checks.
    """
    texts = ["(a:1.5) [b] \\(c\\) \\ d", words(74) + ", (b:1.2) c", "a" + ", (x)" * 40]
    for text in texts:
        opts.emphasis = "None"
        ref_chunks, _ = embedder.tokenize_line(text)
        ours = chunk_prompt(text, syntax="none", chunking="a1111", comma_backtrack=opts.comma_padding_backtrack)
        assert [c.ids() for c in ours] == [c.tokens for c in ref_chunks]
        compare_encoding(embedder, opts, sd1_model, text, 2, "None", "none")
    opts.emphasis = "None"
    assert len(embedder.tokenize_line("a BREAK b")[0]) == 1  # A1111 None: BREAK is a word
    assert len(chunk_prompt("a BREAK b", syntax="none", chunking="a1111")) == 2  # ours: a chunk break
