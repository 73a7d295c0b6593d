"""Our comfy-mode parsing and chunking against ComfyUI's own tokenizers, token by token.

ComfyUI side: ``comfy.sd1_clip.SDTokenizer`` (CLIP-L, pads with EOS) and ``comfy.sdxl_clip.SDXLClipGTokenizer``
(CLIP-G, pads with 0), built with an (empty) embedding folder as ComfyUI always builds them, so that
``embedding:name`` references behave as in a real install (an unknown one is dropped with a warning).
Our side: ``chunk_prompt(text, syntax="comfy", chunking="comfy")``. Every chunk must carry the same 77 ids
and the same 77 weights (exactly equal floats). BREAK is ours only, so no prompt here contains it.

Deliberate deviation, kept out of the fuzz: ComfyUI accepts ``(x:inf)`` / ``(x:nan)`` weights (Python's
float()); we read such a bracket as one without a weight (text ``x:inf``, weight 1.1), since an infinite
weight poisons the conditioning.
"""

from __future__ import annotations

import logging
import math
import random

import pytest

from clip_suite.clip_impl.text.chunking import chunk_prompt
from clip_suite.clip_impl.text.syntax import parse_comfy
from clip_suite.clip_impl.tokenizer import EOS_ID

FUZZ_STRINGS = 3000
PARSE_FUZZ_STRINGS = 3000

W8 = " ".join(["cat"] * 8)  # 8 tokens: ComfyUI's max_word_length, the smallest group it splits
W7 = " ".join(["cat"] * 7)


def words(n: int, w: str = "cat") -> str:
    return " ".join([w] * n)


HAND_PICKED = [
    "a photo of a cat",
    "",
    "   \n\t  ",
    "(masterpiece:1.2), best quality, (red hair:0.8), 1girl",
    "((nested)) (((deeper))) ((((deepest))))",
    "(a (b (c:1.5) d) e:0.7) outside",
    "(outer:1.3 (inner) more) ((x):0.5)",
    "(a:(b)) (c:1.2:1.3) (:1.5) (d:) (e: 1.5 ) (f:1e1) (g:-0.5) (h:1_0) (i:+2)",
    "\\(escaped\\) \\(not closed and (real \\) inside:1.2)",
    "\\\\(double backslash) back\\slash \\[square\\] trailing\\",
    "unbalanced (open ( brackets never closed",
    "closing ) first ( then open ) and ))(( more (( x",
    ")))",
    "((((",
    "[bracketed] {curly} <angle> [(mixed:1.1)]",
    "a, b,, c,,, ,,,, (d, e:1.1),",
    "(a:1.2)(b:0.8)(c)(d:1.0)",
    # 8-token edge: a 7-token weighted group that does not fit moves whole, an 8-token one is cut.
    words(70) + " (" + W7 + ":1.2)",
    words(70) + " (" + W8 + ":1.2)",
    words(68) + " (" + W7 + ":1.2) (" + W8 + ":0.9)",
    words(75) + " (" + W7 + ":1.1)",
    # exactly 75 / 76 / 150 / 151 tokens, unweighted and weighted
    words(75),
    words(76),
    words(150),
    words(151),
    "(" + words(75) + ":1.3)",
    words(74) + " (dog:1.2)",
    words(74) + " (dog cat:1.2)",
    # unicode, normalisation, special-token strings
    "Café naïve 日本語の猫 🐱🐶 straße Ωmega ｆｕｌｌｗｉｄｔｈ e\u0301 \u00a0nbsp",
    "<|endoftext|> literal end, <|startoftext|> literal start",
    # embedding references (none exist: ComfyUI drops the name, keeps any leftover text)
    "a embedding:foo cat",
    "embedding:bar, baz qux",
    "x\nembedding:q y (embedding:w:1.2) z",
    "a embedding:foo, (b embedding:,c d:1.1)",
    # long: 500+ tokens with weights all over
    ", ".join(f"(word{i}:{1 + (i % 7) / 10})" if i % 3 == 0 else f"plain {i} text" for i in range(150)),
]


@pytest.fixture(scope="module")
def comfy_tokenizers(comfy_path, tmp_path_factory):
    from comfy import sd1_clip, sdxl_clip

    embeddings = str(tmp_path_factory.mktemp("embeddings"))
    return {
        "l": sd1_clip.SDTokenizer(embedding_directory=embeddings),
        "g": sdxl_clip.SDXLClipGTokenizer(embedding_directory=embeddings),
    }


def comfy_chunks(tokenizer, text: str) -> list[tuple[list[int], list[float]]]:
    return [([t for t, _ in b], [w for _, w in b]) for b in tokenizer.tokenize_with_weights(text)]


def our_chunks(text: str, pad_id: int) -> list[tuple[list[int], list[float]]]:
    return [(c.ids(pad_id), c.weights()) for c in chunk_prompt(text, syntax="comfy", chunking="comfy")]


def mismatch(text: str, tower: str, theirs, ours) -> str | None:
    """A readable description of the first difference, or None when the chunks are identical."""
    if theirs == ours:
        return None
    head = f"{tower} {text[:120]!r}: "
    if len(theirs) != len(ours):
        return head + f"ComfyUI gives {len(theirs)} chunks, we give {len(ours)}"
    for k, ((ti, tw), (oi, ow)) in enumerate(zip(theirs, ours)):
        for j in range(max(len(ti), len(oi))):
            a = (ti[j], tw[j]) if j < len(ti) else None
            b = (oi[j], ow[j]) if j < len(oi) else None
            if a != b:
                return head + f"chunk {k} position {j}: ComfyUI (id, weight) {a}, ours {b}"
    return head + "differs"


def pad_of(tower: str) -> int:
    return EOS_ID if tower == "l" else 0


@pytest.fixture(autouse=True)
def _quiet_comfy_warnings(caplog):
    # ComfyUI logs one warning per unknown embedding reference; the fuzz would print thousands.
    caplog.set_level(logging.ERROR)


@pytest.mark.parametrize("tower", ["l", "g"])
def test_hand_picked_prompts_chunk_like_comfyui(comfy_tokenizers, tower):
    assert len(HAND_PICKED) >= 30
    tok = comfy_tokenizers[tower]
    found = (mismatch(text, tower, comfy_chunks(tok, text), our_chunks(text, pad_of(tower))) for text in HAND_PICKED)
    problems = [p for p in found if p]
    assert not problems, "\n".join(problems)


def test_hand_picked_prompts_cover_the_edges(comfy_tokenizers):
    """The edge cases above really are edges in ComfyUI (guards the prompt list, not our code)."""
    tok = comfy_tokenizers["l"]
    n = {text: len(comfy_chunks(tok, text)) for text in HAND_PICKED}
    assert n[words(75)] == 1 and n[words(76)] == 2 and n[words(150)] == 2 and n[words(151)] == 3
    assert n[HAND_PICKED[-1]] >= 7  # 500+ tokens
    seven = comfy_chunks(tok, words(70) + " (" + W7 + ":1.2)")
    eight = comfy_chunks(tok, words(70) + " (" + W8 + ":1.2)")
    assert seven[0][1][71] == 1.0 and seven[1][1][1] == pytest.approx(1.2)  # moved whole
    assert eight[0][1][71] == pytest.approx(1.2) and eight[1][1][3] == pytest.approx(1.2)  # cut at the edge


_PIECES = list("()()()[]::\\ ,,..0123456789ab") + [
    "\\(", "\\)", "cat", "red hair", ":1.3)", ":0.8)", ":1.", "((", "))", "\n", " (x:1.2) ", "  ", "日本", "é"
]
_EMBEDDING_PIECES = [" embedding:emb", " embedding:,e", "\nembedding:q,", " embedding:x "]


def random_prompt(rng: random.Random) -> str:
    """A prompt over brackets, colons, digits, spaces, commas, backslashes and a few words.

    Lengths spread from empty to ~600 pieces so that many strings cross one or more chunk edges; one
    string in four also holds (unknown) embedding references.
    """
    n = rng.choice([rng.randint(0, 20), rng.randint(20, 120), rng.randint(120, 600)])
    pieces = _PIECES + _EMBEDDING_PIECES if rng.random() < 0.25 else _PIECES
    return "".join(rng.choice(pieces) for _ in range(n))


def _finite_weights(comfy_path, text: str) -> bool:
    from comfy import sd1_clip

    return all(math.isfinite(w) for _, w in sd1_clip.token_weights(sd1_clip.escape_important(text), 1.0))


def test_fuzz_chunks_like_comfyui(comfy_tokenizers, comfy_path):
    rng = random.Random(20251014)
    compared, skipped, problems = 0, [], []
    for _ in range(FUZZ_STRINGS):
        text = random_prompt(rng)
        assert "BREAK" not in text
        if not _finite_weights(comfy_path, text):  # the deliberate inf/nan deviation (module docstring)
            skipped.append(text)
            continue
        try:
            theirs = {tower: comfy_chunks(comfy_tokenizers[tower], text) for tower in ("l", "g")}
        except IndexError:
            # ComfyUI crashes on "embedding:" followed by no name; any result of ours is fine there.
            skipped.append(text)
            continue
        compared += 1
        found = [mismatch(text, t, theirs[t], our_chunks(text, pad_of(t))) for t in ("l", "g")]
        if any(found):
            problems.append(next(p for p in found if p))
    print(f"\nfuzz: {compared} strings compared on CLIP-L and CLIP-G, {len(skipped)} skipped")
    assert compared >= 0.95 * FUZZ_STRINGS, f"too many skipped: {skipped[:5]}"
    assert not problems, f"{len(problems)} of {compared} differ; first ones:\n" + "\n".join(problems[:10])


def test_fuzz_parse_like_comfyui_token_weights(comfy_path):
    """parse_comfy == ComfyUI's token_weights on the escaped text, with each piece unescaped."""
    from comfy import sd1_clip

    rng = random.Random(7)
    problems = []
    compared = 0
    for _ in range(PARSE_FUZZ_STRINGS):
        text = random_prompt(rng)
        theirs = [
            (sd1_clip.unescape_important(t), w) for t, w in sd1_clip.token_weights(sd1_clip.escape_important(text), 1.0)
        ]
        if not all(math.isfinite(w) for _, w in theirs):
            continue
        compared += 1
        ours = [(s.text, s.weight) for s in parse_comfy(text)]
        if ours != theirs:
            problems.append(f"{text[:120]!r}:\n  ComfyUI {theirs[:8]}\n  ours    {ours[:8]}")
    print(f"\nparse fuzz: {compared} strings compared")
    assert compared >= 0.95 * PARSE_FUZZ_STRINGS
    assert not problems, f"{len(problems)} of {compared} differ; first ones:\n" + "\n".join(problems[:5])
