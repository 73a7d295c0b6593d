"""Chunk packing against hand-worked examples: ComfyUI's rule, A1111's comma backtrack, BREAK."""

import pytest

from clip_suite.clip_impl.text.chunking import chunk_prompt, describe_chunks
from clip_suite.clip_impl.tokenizer import BOS_ID, EOS_ID, get_tokenizer

A, B, COMMA = 320, 321, 267  # "a", "b", ","


def words(n, w="a"):
    return " ".join([w] * n)


def bodies(chunks):
    return [[t.id for t in c.body] for c in chunks]


def counts(text, **kw):
    return [len(c.body) for c in chunk_prompt(text, **kw)]


# ------------------------------------------------------------------------------------------ shape
@pytest.mark.parametrize("chunking", ["comfy", "a1111"])
def test_every_chunk_is_77_with_bos_eos_and_padding(chunking):
    for chunk in chunk_prompt(words(100), chunking=chunking):
        ids = chunk.ids()
        assert len(ids) == 77 and ids[0] == BOS_ID and ids[len(chunk.body) + 1] == EOS_ID
        assert ids[len(chunk.body) + 2 :] == [EOS_ID] * (75 - len(chunk.body))
        g = chunk.ids(pad_id=0)
        assert g[len(chunk.body) + 1] == EOS_ID and g[len(chunk.body) + 2 :] == [0] * (75 - len(chunk.body))
        assert chunk.weights()[0] == chunk.weights()[-1] == 1.0


@pytest.mark.parametrize("chunking", ["comfy", "a1111"])
def test_empty_prompt_is_one_empty_chunk(chunking):
    (chunk,) = chunk_prompt("", chunking=chunking)
    assert chunk.ids() == [BOS_ID] + [EOS_ID] * 76


@pytest.mark.parametrize("chunking", ["comfy", "a1111"])
def test_75_tokens_are_one_chunk_76_are_two(chunking):
    assert counts(words(75), chunking=chunking) == [75]
    assert counts(words(76), chunking=chunking) == [75, 1]


# ------------------------------------------------------------------------------------------ comfy
def test_comfy_short_group_moves_whole():
    # 70 unweighted tokens, then a 7-token weighted group: it does not fit and is < 8 tokens.
    assert counts(words(70) + " (" + words(7, "b") + ":1.2)") == [70, 7]


def test_comfy_long_group_is_cut_at_the_edge():
    chunks = chunk_prompt(words(70) + " (" + words(8, "b") + ":1.2)")
    assert bodies(chunks) == [[A] * 70 + [B] * 5, [B] * 3]
    assert chunks[0].weights()[71:76] == [1.2] * 5 and chunks[1].weights()[1:4] == [1.2] * 3


def test_comfy_is_not_comma_aware():
    assert counts(words(70) + ", " + words(10, "b")) == [75, 6]


# ComfyUI always has an embeddings folder; a reference it cannot find loses its name (the first word),
# the text after it stays. Ids (checked against ComfyUI): a=320, b=321, c=322, d=323, cat=2368, ","=267,
# baz=25268, qux=666+343.
@pytest.mark.parametrize(
    "prompt, expected",
    [
        ("a embedding:foo cat", [(320, 1.0), (2368, 1.0)]),
        ("a\nembedding:foo", [(320, 1.0)]),
        # "bar," is retried as "bar"; the comma stays in front of the leftover.
        ("embedding:bar, baz qux", [(267, 1.0), (25268, 1.0), (666, 1.0), (343, 1.0)]),
        # ",c": ComfyUI keeps name[len("c"):] == "c" (its quirk, kept bit for bit).
        ("(b embedding:,c d:1.1)", [(321, 1.1), (322, 1.1), (323, 1.1)]),
    ],
)
def test_comfy_unknown_embedding_reference_is_dropped(prompt, expected):
    (chunk,) = chunk_prompt(prompt)
    assert [(t.id, t.weight) for t in chunk.body] == expected


def test_embedding_word_that_is_no_reference_stays_text():
    tok = get_tokenizer()
    assert bodies(chunk_prompt("xembedding:foo cat")) == [tok.encode("xembedding:foo cat")]
    # A1111 syntax has no embedding: references (whatever the packing); ComfyUI syntax has them with either.
    assert bodies(chunk_prompt("a embedding:foo cat", syntax="a1111")) == [tok.encode("a embedding:foo cat")]
    assert bodies(chunk_prompt("a embedding:foo cat", syntax="a1111", chunking="comfy")) == [tok.encode("a embedding:foo cat")]
    assert bodies(chunk_prompt("a embedding:foo cat", chunking="a1111")) == [tok.encode("a cat")]
    assert bodies(chunk_prompt("a embedding: ")) == [tok.encode("a embedding:")]  # no name: ComfyUI fails


# ------------------------------------------------------------------------------------------ a1111
def prompt_with_comma_at(pos, total=85):
    """Tokens: `pos` a's, a comma at index pos, then b's up to `total` tokens."""
    return words(pos) + " , " + words(total - pos - 1, "b")


@pytest.mark.parametrize(
    "backtrack,expected",
    [
        (0, [75, 10]),  # off
        (4, [75, 10]),  # comma 5 back: too far
        (5, [71, 14]),  # exactly at the limit: moves
        (20, [71, 14]),  # the default
        (74, [71, 14]),
    ],
)
def test_a1111_comma_backtrack(backtrack, expected):
    chunks = chunk_prompt(prompt_with_comma_at(70), chunking="a1111", comma_backtrack=backtrack)
    assert [len(c.body) for c in chunks] == expected
    if expected[0] == 71:
        assert chunks[0].body[-1].id == COMMA and chunks[1].body[0].id == B  # the comma stays


def test_a1111_backtrack_74_can_leave_a_two_token_chunk():
    chunks = chunk_prompt(prompt_with_comma_at(1, 80), chunking="a1111", comma_backtrack=74)
    assert bodies(chunks)[0] == [A, COMMA]
    assert [len(c.body) for c in chunks] == [2, 75, 3]


def test_a1111_comma_at_a_full_chunk_is_not_a_backtrack_point():
    chunks = chunk_prompt(words(75) + " , " + words(80, "b"), chunking="a1111", comma_backtrack=20)
    assert bodies(chunks)[0] == [A] * 75
    assert bodies(chunks)[1][0] == COMMA and len(chunks[1].body) == 75  # no move at the next edge
    assert [len(c.body) for c in chunks] == [75, 75, 6]


def test_a1111_weights_move_with_tokens():
    chunks = chunk_prompt(words(70) + ", (" + words(10, "b") + ":1.3)", syntax="a1111", chunking="a1111")
    assert [len(c.body) for c in chunks] == [71, 10]
    assert [t.weight for t in chunks[1].body] == [1.3] * 10


def test_a1111_runs_are_tokenized_separately():
    # "a (cat)s" -> cat</w> s</w>, not "cats"
    ids = bodies(chunk_prompt("a (cat)s", syntax="a1111", chunking="a1111"))[0]
    whole = bodies(chunk_prompt("a cats", syntax="a1111", chunking="a1111"))[0]
    assert len(ids) == 3 and len(whole) == 2


# ------------------------------------------------------------------------------------------ BREAK
@pytest.mark.parametrize("chunking", ["comfy", "a1111"])
@pytest.mark.parametrize(
    "prompt,expected",
    [
        ("a BREAK b", [1, 1]),
        ("BREAK a", [0, 1]),  # a leading BREAK makes an empty chunk
        ("a BREAK", [1]),  # a trailing BREAK adds nothing
        ("a BREAK BREAK b", [1, 0, 1]),
        (words(75) + " BREAK b", [75, 1]),  # right after exactly 75 tokens: no empty chunk
        ("BREAK", [0]),
    ],
)
def test_break(chunking, prompt, expected):
    syntax = "a1111" if chunking == "a1111" else "comfy"
    assert counts(prompt, syntax=syntax, chunking=chunking) == expected


def test_break_inside_brackets_is_a_word_in_a1111():
    (chunk,) = chunk_prompt("(a BREAK b:1.2)", syntax="a1111", chunking="a1111")
    assert [round(t.weight, 6) for t in chunk.body] == [1.2, -1.2, 1.2]


# ------------------------------------------------------------------------------------------ report
def test_describe_chunks():
    report = describe_chunks(chunk_prompt(words(80) + " end of it BREAK last words"))
    assert report["tokens"] == 85 and report["chunks"] == 3 and report["chunk_tokens"] == [75, 8, 2]
    assert report["boundaries"][1] == "a end of it" and report["boundaries"][2] == "last words"
