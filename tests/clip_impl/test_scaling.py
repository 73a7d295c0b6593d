"""Parsing and chunking cost grows linearly with the prompt: 10x the characters, at most ~12x the time.

The prompt shapes are those of ``benchmarks/bench_scaling.py`` (which prints the table for 10^4..10^6
characters): comfy and a1111 syntax, flat and nested (the nested shapes were quadratic before issue 15).
Here the sizes are 4,000 -> 40,000 characters for parsing and 2,000 -> 20,000 for the whole chunk_prompt
(parse, tokenize, pack), so the file takes a few seconds; each time is the best of a few runs
(time.perf_counter, 10 calls per measurement for the small input, garbage collector off as in timeit),
and the bound has slack for a shared 2-core machine: 18x, plus 20 ms. A quadratic cost gives ~100x.
"""

from __future__ import annotations

import pytest

from clip_suite.clip_impl.text.chunking import PromptToken, chunk_prompt, pack_a1111, pack_comfy
from clip_suite.clip_impl.text.syntax import parse_prompt
from helpers.shared_helpers import load_benchmark

_bench = load_benchmark("bench_scaling")
best_time, prompt = _bench.best_time, _bench.prompt

MAX_RATIO, SLACK_S = 18.0, 0.02


def _ratio_ok(fn_small, fn_large, repeats: int = 3) -> tuple[bool, str]:
    fn_small()  # warm up (regexes, the tokenizer, allocator pools)
    # The small input runs 10 times per measurement, so both measurements span about the same wall time and
    # meet the same machine load; each is the best of ``repeats``.
    small, large = best_time(fn_small, repeats, number=10), best_time(fn_large, repeats)
    return large <= MAX_RATIO * small + SLACK_S, f"{small * 1000:.1f} ms -> {large * 1000:.1f} ms ({large / small:.1f}x)"


@pytest.mark.parametrize("syntax", ["comfy", "a1111"])
@pytest.mark.parametrize("shape", ["flat", "nested"])
def test_parse_and_chunk_scale_linearly(syntax, shape):
    small, large = prompt(4_000, syntax, shape), prompt(40_000, syntax, shape)
    assert len(small) == 4_000 and len(large) == 40_000
    ok, detail = _ratio_ok(lambda: parse_prompt(small, syntax), lambda: parse_prompt(large, syntax))
    assert ok, f"parse {syntax} {shape}: {detail}"
    small, large = small[:2_000], large[:20_000]
    ok, detail = _ratio_ok(
        lambda: chunk_prompt(small, syntax=syntax, chunking=syntax),
        lambda: chunk_prompt(large, syntax=syntax, chunking=syntax),
        repeats=2,
    )
    assert ok, f"chunk {syntax} {shape}: {detail}"


@pytest.mark.parametrize("pack", [pack_comfy, pack_a1111], ids=["comfy", "a1111"])
def test_packing_one_long_group_scales_linearly(pack):
    """One weighted run of many tokens (a prompt without brackets is one group in comfy syntax)."""
    tokens = [PromptToken(320, 1.0)] * 200_000
    ok, detail = _ratio_ok(lambda: pack([tokens[:20_000]]), lambda: pack([tokens]))
    assert ok, f"{pack.__name__}: {detail}"
    assert len(pack([tokens])) == 200_000 // 75 + 1
