"""Weighting syntaxes against hand-worked examples (ComfyUI's and A1111's rules, DESIGN 4)."""

import pytest

from clip_suite.clip_impl.text.syntax import parse_a1111, parse_comfy, parse_prompt


def runs(segments):
    return [("BREAK" if s.is_break else s.text, round(s.weight, 6)) for s in segments]


@pytest.mark.parametrize(
    "prompt,expected",
    [
        ("a (b) c", [("a ", 1.0), ("b", 1.1), (" c", 1.0)]),
        ("((x))", [("x", 1.21)]),
        ("((x:1.1))", [("x", 1.1)]),  # an explicit weight overrides outer brackets
        ("(a (b:1.2):1.3) d", [("a ", 1.3), ("b", 1.2), (" d", 1.0)]),
        ("[x]", [("[x]", 1.0)]),  # square brackets are plain text
        ("\\(x\\) (y:0.5)", [("(x) ", 1.0), ("y", 0.5)]),
        ("(x:-1)", [("x", -1.0)]),  # negative weights are legal
        ("((((", [("((((", 1.0)]),  # unbalanced: literal, as in ComfyUI
        ("((a)", [("(a", 1.1)]),
        ("a) (b) (c)", [("a) (b) (c)", 1.0)]),  # a stray ')' turns later groups into text (ComfyUI)
        ("(x:inf)", [("x:inf", 1.1)]),  # non-finite weights are refused
        ("(:1.2)", [(":1.2", 1.1)]),
        ("a BREAK b", [("a", 1.0), ("BREAK", 1.0), ("b", 1.0)]),
        ("(a BREAK b)", [("a BREAK b", 1.1)]),  # inside brackets BREAK is a word
        ("aBREAK Break", [("aBREAK Break", 1.0)]),
    ],
)
def test_comfy(prompt, expected):
    assert runs(parse_comfy(prompt)) == expected


@pytest.mark.parametrize(
    "prompt,expected",
    [
        ("a (cat)s", [("a ", 1.0), ("cat", 1.1), ("s", 1.0)]),
        ("((x))", [("x", 1.21)]),
        ("[x]", [("x", 0.909091)]),
        ("((x:1.3))", [("x", 1.43)]),  # nesting multiplies
        ("(x:0.5)", [("x", 0.5)]),
        ("[[x]]", [("x", 0.826446)]),
        ("(x:-0.5)", [("x", -0.5)]),
        ("(unclosed", [("unclosed", 1.1)]),
        ("a (b) (c) d", [("a ", 1.0), ("b", 1.1), (" ", 1.0), ("c", 1.1), (" d", 1.0)]),
        ("\\(x\\) \\\\ y", [("(x) \\ y", 1.0)]),
        ("BREAK a BREAK BREAK b BREAK", [("", 1.0), ("BREAK", 1.0), ("a", 1.0), ("BREAK", 1.0), ("", 1.0), ("BREAK", 1.0), ("b", 1.0), ("BREAK", 1.0), ("", 1.0)]),
        ("(a BREAK b:1.2)", [("a", 1.2), ("BREAK", -1.2), ("b", 1.2)]),  # A1111 keeps the word, weight -1 x 1.2
        ("(x:1.2.3)", [("x:1.2.3", 1.1)]),  # A1111 would crash; we keep the text
        ("", [("", 1.0)]),
    ],
)
def test_a1111(prompt, expected):
    got = runs(parse_a1111(prompt))
    if prompt == "(a BREAK b:1.2)":
        assert [s.is_break for s in parse_a1111(prompt)] == [False, False, False]
    assert got == expected


def test_a1111_merge_keeps_unequal_runs_apart():
    # "a (b) (c) d": b and c are both 1.1 and adjacent after parsing, so they merge, as in A1111.
    assert runs(parse_a1111("(b)(c)")) == [("bc", 1.1)]


@pytest.mark.parametrize(
    "prompt,expected",
    [
        ("a\\b", [("ab", 1.0)]),
        ("a \\ b", [("a  b", 1.0)]),
        ("\\", [("", 1.0)]),
        ("(x\\y:1.5)", [("xy", 1.5)]),
        ("\\\\\\", [("\\", 1.0)]),  # an escaped backslash, then a lone one
        ("\\BREAK b", [("", 1.0), ("BREAK", 1.0), ("b", 1.0)]),  # the lone '\' goes, BREAK stays a break
    ],
)
def test_a1111_lone_backslash_is_dropped(prompt, expected):
    # A1111's parse_prompt_attention matches a backslash not followed by ()[]\ on its own and keeps
    # text[1:] of it, i.e. nothing.
    assert runs(parse_a1111(prompt)) == expected


def test_none_keeps_brackets_but_honours_break():
    assert runs(parse_prompt("(a:1.5) [b] BREAK c", "none")) == [("(a:1.5) [b]", 1.0), ("BREAK", 1.0), ("c", 1.0)]


def test_unknown_syntax_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown weighting syntax 'nope'"):
        parse_prompt("x", "nope")


def test_deep_nesting_does_not_recurse():
    # ComfyUI's own parser hits Python's recursion limit near 1000 levels; ours is iterative.
    deep = "(" * 3000 + "x" + ")" * 3000
    (seg,) = parse_comfy(deep)
    assert seg.text == "x" and seg.weight == pytest.approx(1.1**3000, rel=1e-9)
    assert runs(parse_a1111("(" * 5000 + "x")) == [("x", round(_a1111_nested(5000), 6))]


def _a1111_nested(n):
    w = 1.0
    for _ in range(n):
        w *= 1.1
    return w
