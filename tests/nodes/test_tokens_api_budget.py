"""The tokenizer route and the nodes on hostile schedules (issue 26): work that stops when its budget ends (a
later "a cat" answers at once), schedules over the limits and AND weights out of range as 400s with the
library's message, strict JSON, and steps refused by the encoders before any work. Heavy cases run in a
child process bounded in time and memory (``tests/helpers/bounded.py``)."""

from __future__ import annotations

import asyncio
import json

import pytest

from helpers.bounded import HAS_PROC, describe, run_bounded
from clip_suite.nodes import NODE_CLASS_MAPPINGS as NODES
from clip_suite.nodes.hosting.tokens_route import make_handler

bounded = pytest.mark.skipif(not HAS_PROC, reason="the time/RSS bounds read /proc (Linux)")
COPRIME = "[a|b|c] [d|e|f|g|h] [i|j|k|l|m|n|o] [p|q|r|s|t|u|v|w|x|y|z] x"

ROUTE_SCENARIO = """
    import asyncio, json, sys, time
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer
    from clip_suite.nodes.hosting import tokens_route as route

    HEAVY = json.loads(sys.stdin.read())

    async def scenario():
        app = web.Application()
        app.router.add_post(route.ROUTE, route.make_handler())
        async with TestClient(TestServer(app)) as client:
            route.TIME_BUDGET_S = float(sys.argv[1])
            heavy = [client.post(route.ROUTE, data=json.dumps(h)) for h in HEAVY]
            answers = await asyncio.gather(*heavy)
            statuses = [a.status for a in answers]
            route.TIME_BUDGET_S = 10.0
            t = time.perf_counter()
            cat = await client.post(route.ROUTE, data=json.dumps({"text": "a cat", "steps": 20}))
            return statuses, cat.status, time.perf_counter() - t

    statuses, cat_status, cat_s = asyncio.run(scenario())
    print(json.dumps([statuses, cat_status, cat_s]))
"""


def _route(heavy: list[dict], budget: float):
    o = run_bounded(ROUTE_SCENARIO, timeout=90, max_rss_mb=900, args=[budget], stdin=json.dumps(heavy).encode())
    assert o.ok, describe(o)
    return json.loads(o.stdout.strip().splitlines()[-1])


@bounded
def test_requests_past_their_budget_stop_and_free_the_route():
    pytest.importorskip("aiohttp")
    # Within every limit but slow: 27 entries of 67 chunks, 28 texts of 30 K characters to tokenize (3-6 s).
    text = "[" + "|".join(f"w{i}" for i in range(48)) + "] " + "(a:1.1) [b] " * 2500
    slow = {"text": text, "steps": 28, "weighting": "a1111"}
    statuses, cat_status, cat_s = _route([slow, slow], 0.3)
    assert statuses == [503, 503] and cat_status == 200 and cat_s < 2.5, (statuses, cat_status, cat_s)


@bounded
def test_schedule_heavy_requests_are_refused_at_once_and_the_route_stays_free():
    pytest.importorskip("aiohttp")
    heavy = {"text": "[a|b] " * 15_000, "steps": 10_000}  # 90 KB: 10,000 entries of 45 K characters
    statuses, cat_status, cat_s = _route([heavy, heavy, {"text": COPRIME, "steps": 10_000}], 10.0)
    assert statuses == [400, 400, 400] and cat_status == 200 and cat_s < 2.5, (statuses, cat_status, cat_s)


def _post(payload: dict):
    web = pytest.importorskip("aiohttp.web")
    from aiohttp.test_utils import TestClient, TestServer

    async def scenario():
        app = web.Application()
        app.router.add_post("/clip_suite/tokens", make_handler())
        async with TestClient(TestServer(app)) as client:
            answer = await client.post("/clip_suite/tokens", data=json.dumps(payload))
            return answer.status, await answer.text()

    return asyncio.run(scenario())


def _strict(body: str):
    return json.loads(body, parse_constant=lambda c: pytest.fail(f"{c} is not JSON a browser reads"))


def test_and_weights_out_of_range_are_a_400_and_answers_are_strict_json():
    status, body = _post({"text": "a cat AND a dog :" + "9" * 400, "weighting": "a1111", "steps": 20})
    assert status == 400 and "AND weight" in _strict(body)["error"] and "Infinity" not in body
    status, body = _post({"text": "a cat :1.5 AND a dog", "weighting": "a1111", "steps": 20})
    assert status == 200 and [e["weight"] for e in _strict(body)["schedule"]["entries"]] == [1.5, 1.0]


def test_schedules_over_the_limits_are_a_400_naming_the_count():
    status, body = _post({"text": COPRIME, "steps": 10_000})
    error = _strict(body)["error"]
    assert status == 400 and "1155 different texts" in error and "limit is 256" in error and "lower steps" in error


@bounded
def test_encoders_refuse_huge_linked_steps_before_any_work(models_root):
    code = """
        import sys
        from clip_suite.nodes import NODE_CLASS_MAPPINGS as NODES, host
        host.set_host(host.StandaloneHost(sys.argv[1]))
        clip = NODES["ClipSuiteLoader"]().load("checkpoints/sd15.safetensors", "none", "auto", "auto", "cpu")["result"][0]
        for steps in (100_000_000, 10_001, -1):
            try:
                NODES["ClipSuiteTextEncode"]().encode(clip, "a [cat|dog]", 0, "a1111", 20, "a1111", "first_chunk",
                                                      "encode", steps=steps, scheduler="normal")
            except ValueError as e:
                assert f"steps={steps} is out of range: use 0..10000" in str(e), e
            else:
                raise AssertionError(steps)
        try:
            NODES["ClipSuiteTextEncode"]().encode(clip, sys.argv[2], 0, "a1111", 20, "a1111", "first_chunk",
                                                  "encode", steps=10_000, scheduler="normal")
        except ValueError as e:
            assert "1155 different texts" in str(e) and "limit is 256" in str(e), e
        else:
            raise AssertionError("coprime alternations at 10000 steps were encoded")
        print("ok")
    """
    o = run_bounded(code, timeout=90, max_rss_mb=900, args=[models_root, COPRIME])
    assert o.ok and o.stdout.strip().endswith("ok"), describe(o)


def test_a1111_parameters_node_replaces_impossible_values(standalone):
    text = ("a cat\nSteps: 100000000, Sampler: Euler, CFG scale: inf, Seed: 12345678901234567890123456, "
            "Size: 99999999x99999999, Clip skip: 1000000000, Version: v1.10.1")
    out = NODES["ClipSuiteA1111Parameters"]().read(text, "sd1")
    clip_skip, steps, cfg, seed, width, height = (out["result"][i] for i in (2, 6, 7, 8, 9, 10))
    assert (clip_skip, steps, cfg, seed, width, height) == (0, 20, 7.0, 0, 512, 512)
    report = out["result"][-1]
    assert report.count("replaced by the default") == 5, report
