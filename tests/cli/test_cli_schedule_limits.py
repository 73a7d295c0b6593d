"""The command line on hostile schedules (issue 26): ``--steps`` bounded before any work, schedules over the
limits and AND weights out of range end with one clean line and exit 2, and ``--json`` is strict JSON."""

from __future__ import annotations

import json

import pytest

from helpers.bounded import HAS_PROC, describe, run_bounded
from test_cli import cli

COPRIME = "[a|b|c] [d|e|f|g|h] [i|j|k|l|m|n|o] [p|q|r|s|t|u|v|w|x|y|z] x"


@pytest.mark.skipif(not HAS_PROC, reason="the time/RSS bounds read /proc (Linux)")
@pytest.mark.parametrize("steps", ["1000000000", "10001", "-5"])
def test_huge_steps_end_cleanly_before_any_work(steps):
    code = """
        import sys
        from clip_suite.cli import main
        sys.exit(main(["tokens", "[a|b] cat", "--steps", sys.argv[1]]))
    """
    o = run_bounded(code, timeout=60, max_rss_mb=600, args=[steps])
    assert o.returncode == 2 and not o.killed, describe(o)
    assert "--steps: must be 0..10000" in o.stderr and "Traceback" not in o.stderr


def test_schedules_over_the_limits_end_with_one_line():
    r = cli("tokens", COPRIME, "--steps", "10000")
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "1155 different texts over 10000 steps; the limit is 256" in r.stderr and "lower steps" in r.stderr
    r = cli("tokens", "[a|b] " + "word " * 160, "--steps", "1000", "--json")  # 999 entries x 3 chunks
    assert r.returncode == 2 and "entries x chunks" in r.stderr and "limit is 2048" in r.stderr


def test_tokens_json_never_holds_infinity():
    r = cli("tokens", "--json", "--weighting", "a1111", "--steps", "20", "a cat AND a dog :" + "9" * 400)
    assert r.returncode == 2 and "Infinity" not in r.stdout and "AND weight" in r.stderr and "Traceback" not in r.stderr
    r = cli("tokens", "--json", "--weighting", "a1111", "--steps", "20", "a cat :2 AND a dog :-0.5")
    assert r.returncode == 0
    report = json.loads(r.stdout, parse_constant=lambda c: pytest.fail(f"not JSON: {c}"))
    assert [e["weight"] for e in report["schedule"]["entries"]] == [2.0, -0.5]


def test_encode_refuses_a_schedule_over_the_limits_before_writing(model_dir, tmp_path):
    out = tmp_path / "c.safetensors"
    r = cli("encode", "--model", model_dir / "sd15.safetensors", "--prompt", COPRIME, "--weighting", "a1111",
            "--steps", "10000", "--out", out)
    assert r.returncode == 2 and "1155 different texts" in r.stderr and not out.exists()
