"""Properties of the a1111 syntax and chunking on arbitrary text (hypothesis; no A1111 files needed).

For any prompt up to ~2000 characters: parsing and chunking never raise; every chunk is 77 ids,
[BOS] + at most 75 prompt tokens + [EOS] + padding; the chunk bodies, concatenated, are exactly the
parsed runs tokenized one by one (BREAK markers aside), weights included; and a chunk ends early only at a
BREAK or at a comma no more than ``comma_backtrack`` tokens before the edge.
"""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clip_suite.clip_impl.text.chunking import chunk_prompt, pack_a1111, tokenize_segments
from clip_suite.clip_impl.text.syntax import parse_a1111
from clip_suite.clip_impl.tokenizer import BOS_ID, COMMA_ID, EOS_ID, get_tokenizer

PIECES = [
    "(", ")", "[", "]", ":", "\\", "\\(", "\\)", "\\\\", ",", ", ", " ", "\n", "BREAK", " BREAK ", "break",
    ":1.2)", ":0)", ":-1)", "1.2.3", ".", "a", "cat", "masterpiece", "1girl", "é", "日本", "😀", "<|endoftext|>",
]  # fmt: skip

prompts = st.one_of(
    st.text(max_size=2000),
    st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=6)), max_size=400).map("".join),
    # Runs of up to 80 one-token words between commas, BREAKs and weighted words, so that chunks fill up
    # and comma backtracks happen often.
    st.lists(
        st.tuples(st.integers(0, 80), st.sampled_from([",", ",", ", ,", " BREAK", " (b:1.2)", " [b c]", ""])),
        max_size=8,
    ).map(lambda parts: " ".join(" ".join(["a"] * n) + sep for n, sep in parts)),
)
backtracks = st.one_of(st.sampled_from([0, 1, 20, 74]), st.integers(0, 74))
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(prompts)
def test_parse_never_raises_and_gives_runs(text):
    segments = parse_a1111(text)
    assert segments, "a prompt always parses to at least one run"
    for seg in segments:
        assert isinstance(seg.text, str) and isinstance(seg.weight, float)
        assert not seg.is_break or seg.text == "BREAK"


@SETTINGS
@given(prompts, backtracks)
def test_chunks_are_77_ids_and_hold_the_tokenized_runs(text, backtrack):
    chunks = chunk_prompt(text, syntax="a1111", chunking="a1111", comma_backtrack=backtrack)
    assert chunks, "a prompt always makes at least one chunk"
    for chunk in chunks:
        ids, weights = chunk.ids(), chunk.weights()
        n = len(chunk.body)
        assert n <= 75 and len(ids) == 77 and len(weights) == 77
        assert ids[0] == BOS_ID and ids[n + 1] == EOS_ID and ids[n + 2 :] == [EOS_ID] * (75 - n)
        assert weights[0] == 1.0 and weights[n + 1 :] == [1.0] * (76 - n)

    tokenizer = get_tokenizer()
    expected = []
    for seg in parse_a1111(text):
        if not seg.is_break:
            expected += [(i, seg.weight) for i in tokenizer.encode(seg.text)]
    got = [(t.id, t.weight) for chunk in chunks for t in chunk.body]
    assert got == expected, "chunk bodies must be the parsed runs, tokenized, in order"


@SETTINGS
@given(prompts, backtracks)
def test_a_chunk_ends_early_only_at_a_break_or_a_near_comma(text, backtrack):
    groups = tokenize_segments(parse_a1111(text), "a1111", get_tokenizer())
    # Chunk the runs between BREAKs on their own: inside one, only the comma rule may end a chunk early.
    pieces, current = [], []
    for group in groups:
        if group is None:
            pieces.append(current)
            current = []
        else:
            current.append(group)
    pieces.append(current)
    for piece in pieces:
        chunks = pack_a1111(piece, backtrack)
        for chunk in chunks[:-1]:
            n = len(chunk.body)
            if n < 75:
                assert backtrack and chunk.body[-1].id == COMMA_ID, f"chunk of {n} not ending at a comma"
                assert 75 - (n - 1) <= backtrack, f"comma {75 - (n - 1)} tokens back, limit {backtrack}"
