"""Hostile prompts and counts, round 3 (issue 26): every A1111 parser linear on megabyte inputs, ``steps``
bounded before any work is sized from it, schedule work bounded (different texts, entries x chunks) with a
message naming the count, the limit and the fix, and AND weights that are finite. Time and memory cases run
in a child process killed past a time and RSS bound (``tests/helpers/bounded.py``)."""

from __future__ import annotations

import json
import random
import re

import pytest

from helpers.bounded import HAS_PROC, describe, run_bounded
from clip_suite.clip_impl.a1111 import (
    MAX_SCHEDULE_ENTRY_CHUNKS, MAX_SCHEDULE_TEXTS, MAX_STEPS, BudgetExceeded, Deadline, encode_scheduled, plan_prompt,
    plan_report, step_percents, step_texts,
)
from clip_suite.clip_impl.a1111.extra_networks import strip_tags
from clip_suite.clip_impl.a1111.schedule import prompt_schedule, split_and
from clip_suite.clip_impl.text import EncodeSettings
from clip_suite.clip_impl.weights import load_clip

bounded = pytest.mark.skipif(not HAS_PROC, reason="the time/RSS bounds read /proc (Linux)")
A1111 = EncodeSettings(weighting="a1111", chunking="a1111")
COPRIME = "[a|b|c] [d|e|f|g|h] [i|j|k|l|m|n|o] [p|q|r|s|t|u|v|w|x|y|z] x"  # 3*5*7*11 = 1155 texts


# ------------------------------------------------------------------------------------ linear parsers
@bounded
def test_every_a1111_parser_reads_a_megabyte_of_any_shape_in_linear_time():
    code = r"""
        import json, time
        from clip_suite.clip_impl.a1111 import parse_infotext, translate
        from clip_suite.clip_impl.a1111.extra_networks import strip_tags
        from clip_suite.clip_impl.a1111.schedule import split_and
        N = 1_000_000
        shapes = {
            "long last line": "a" * N, "words": "a b " * (N // 4), "commas": "," * N, "quotes": '"' * N,
            "unbalanced quotes": 'Steps: "' + "x\\" * (N // 2), "quoted fields": 'k: "a, ' * (N // 7),
            "key: repeated": "key: " * (N // 5), "spaces then key": " " * N + "k: v, a: b, c: d",
            "tags": "<a:" * (N // 3), "spaces before AND": "a" + " " * N + "b :1 AND c",
            "weights": "a :1 " * (N // 5), "brackets": "[" * N, "alternations": "[a|" * (N // 3),
        }
        slow = {}
        for name, s in shapes.items():
            for text in ("prompt\n" + s, s):
                t = time.perf_counter()
                translate(parse_infotext(text), "sd1")
                strip_tags(text)
                try:
                    split_and(text)
                except ValueError:  # "spaces before AND" ends in a weight: fine, it is refused quickly
                    pass
                took = time.perf_counter() - t
                if took > 0.9:
                    slow[name] = round(took, 2)
        print(json.dumps(slow))
    """
    o = run_bounded(code, timeout=90, max_rss_mb=900)
    assert o.ok, describe(o)
    assert json.loads(o.stdout.strip().splitlines()[-1]) == {}, o.stdout


@bounded
def test_schedule_grammar_is_linear_on_nested_and_failing_brackets():
    code = r"""
        import time
        from clip_suite.clip_impl.a1111.schedule import prompt_schedule
        def took(n):
            out = 0.0
            for s in ("[" * 63 + "[a]" * (n // 3), "[a:" * (n // 3), "[a|" * (n // 4) + "]" * (n // 4), "[a:b:1]" * (n // 7)):
                t = time.perf_counter(); prompt_schedule(s, 20); out += time.perf_counter() - t
            return out
        small, big = took(40_000), took(400_000)
        print(small, big)
        assert big < 15 * small + 1.0, (small, big)
    """
    o = run_bounded(code, timeout=120, max_rss_mb=900)
    assert o.ok, describe(o)


A1111_FIELD = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')  # A1111's own regex
A1111_WEIGHT = re.compile(r"^((?:\s|.)*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$")
A1111_TAG = re.compile(r"<(\w+):([^>]+)>")


def test_linear_readers_agree_with_a1111s_regexes():
    from clip_suite.clip_impl.a1111.infotext import parse_infotext

    r = random.Random(26)
    alphabet = list('ab1_ -/:,"\\\té<>') + ["Steps: ", "k: ", '"x"', ", ", "AND", " :1.5", ":-2", "<lora:x:1>"]
    for _ in range(6000):
        s = "".join(r.choice(alphabet) for _ in range(r.randint(0, 14))).rstrip()
        fields = A1111_FIELD.findall(s)
        read = parse_infotext("p\n" + s).fields
        assert read.keys() >= {k for k, _ in fields} if len(fields) >= 3 else not read, s
        expected = [A1111_WEIGHT.search(part).groups() for part in re.split(r"\bAND\b", s)]
        expected = [(text, float(w) if w else 1.0) for text, w in expected]
        if all(abs(w) <= 1e4 for _, w in expected):
            assert split_and(s) == expected, s
        else:
            with pytest.raises(ValueError, match="AND weight"):
                split_and(s)
        assert strip_tags(s)[0] == A1111_TAG.sub("", s), s


# ------------------------------------------------------------------------------------ steps bounded
@bounded
def test_huge_steps_are_refused_before_any_work():
    code = """
        from clip_suite.clip_impl.a1111 import plan_prompt, step_percents, step_texts
        for call in (lambda: plan_prompt("[a|b] cat", weighting="a1111", steps=100_000_000),
                     lambda: step_texts("[a|b] cat", 10**12), lambda: step_percents("normal", 100_000_000)):
            try:
                call()
            except ValueError as e:
                assert "100000000" in str(e) or "1000000000000" in str(e), e
                assert "10000" in str(e), e
            else:
                raise AssertionError("not refused")
        print("ok")
    """
    o = run_bounded(code, timeout=60, max_rss_mb=700)
    assert o.ok and o.stdout.strip().endswith("ok"), describe(o)


def test_steps_limit_is_comfyuis_and_the_widgets():
    from clip_suite.nodes import common

    assert MAX_STEPS == 10_000 and common.schedule_inputs()["steps"][1]["max"] == MAX_STEPS
    assert len(step_texts("[a|b]", MAX_STEPS)) == MAX_STEPS
    for bad in (MAX_STEPS + 1, -1, 2.5, True, "20"):
        with pytest.raises(ValueError, match="steps="):
            plan_prompt("x", weighting="a1111", steps=bad)


# ------------------------------------------------------------------------------ schedule work bounded
@bounded
def test_planning_is_linear_in_steps_and_alternations():
    code = """
        import time
        from clip_suite.clip_impl.a1111 import plan_prompt, step_texts
        t = time.perf_counter()
        texts = step_texts("[a|b] " * 15_000, 10_000)  # 90 KB, 15,000 alternations, 10,000 steps: 2 texts
        assert len(texts) == 10_000 and len(set(map(id, texts))) == 2
        texts = step_texts("[cat|dog] " * 2_000 + "[x:y:5000]", 10_000)
        assert len(set(texts)) == 4
        plan = plan_prompt("a [cat|dog] on a mat", weighting="a1111", steps=2_000)
        assert len(plan.entries) == 1_999 and len(plan.texts) == 2  # steps 0-1, 2, ..., 1999
        print(time.perf_counter() - t)
    """
    o = run_bounded(code, timeout=20, max_rss_mb=600)
    assert o.ok, describe(o)


@pytest.mark.parametrize("prompt,steps,count", [
    (COPRIME, 10_000, "1155 different texts"),
    (" ".join(f"[a{i}:b{i}:{i}]" for i in range(1, 1001)), 1000, "999 different texts"),
    (" AND ".join(f"[a{i}|b{i}]" for i in range(200)), 20, "400 different texts"),
])
def test_too_many_texts_are_refused_naming_the_count_the_limit_and_the_fix(prompt, steps, count):
    with pytest.raises(ValueError) as e:
        plan_prompt(prompt, weighting="a1111", steps=steps)
    assert count in str(e.value) and f"limit is {MAX_SCHEDULE_TEXTS}" in str(e.value)
    assert "lower steps or simplify the alternations" in str(e.value)
    assert len(plan_prompt(COPRIME, weighting="a1111", steps=200).texts) == 199  # within the limit: planned


def test_entries_beyond_the_limit_are_refused():
    with pytest.raises(ValueError, match=f"more than {MAX_SCHEDULE_ENTRY_CHUNKS} conditioning entries"):
        plan_prompt(" AND ".join(["[a|a|b]"] * 2), weighting="a1111", steps=MAX_STEPS)
    with pytest.raises(ValueError, match="characters of text in all"):
        plan_prompt("[a|b] " + "word " * 2_000, weighting="a1111", steps=2_000)  # 1,999 entries of 10 K


def test_entries_times_chunks_are_checked_before_encoding(model_dir):
    model = load_clip(model_dir / "sd15.safetensors")
    prompt = "[a|b] " + "word " * 160  # 3 chunks; 999 entries at 1,000 steps
    limit = rf"limit is {MAX_SCHEDULE_ENTRY_CHUNKS}: shorten the prompt, or lower steps"
    with pytest.raises(ValueError, match=rf"chunks of 77 tokens.*{limit}"):
        encode_scheduled(model, prompt, A1111, 1_000, "karras")
    plan = plan_prompt(prompt, weighting="a1111", steps=1_000)
    with pytest.raises(ValueError, match="entries x chunks"):
        plan_report(plan, len, chunks_of=lambda t, tl: 3)
    assert len(encode_scheduled(model, prompt, A1111, 30, "karras").entries) == 29  # steps 0-1, 2, ..., 29


def test_a_passed_deadline_stops_the_planning():
    deadline = Deadline(0.0, "planning")
    with pytest.raises(BudgetExceeded, match="planning took more than 0 s"):
        plan_prompt("[a|b] [c|d|e]", weighting="a1111", steps=30, deadline=deadline)
    with pytest.raises(BudgetExceeded):
        plan_report(plan_prompt("[a|b]", weighting="a1111", steps=4), len, deadline=deadline)
    assert isinstance(BudgetExceeded("x"), TimeoutError) and not isinstance(BudgetExceeded("x"), ValueError)


# ------------------------------------------------------------------------------------ finite weights
@pytest.mark.parametrize("weight", ["9" * 400, "1" * 40, "10001", "-99999"])
def test_and_weights_beyond_the_encoders_range_are_refused(weight):
    with pytest.raises(ValueError, match=r"AND weight .* of sub-prompt 2 is out of range: use a number between -10000"):
        plan_prompt(f"a cat AND a dog :{weight}", weighting="a1111", steps=20)
    assert split_and("a :10000 AND b :-0.5") == [("a", 10000.0), (" b", -0.5)]


def test_schedule_results_are_unchanged_by_the_bounds():
    assert prompt_schedule("a [b:c:3] [d|e]", 4) == [(1, "a b d"), (2, "a b e"), (3, "a b d"), (4, "a c e")]
    assert step_texts("[a:b:0.5]", 1) == ["b"] and step_percents("normal", 3)[0] == 0.0
