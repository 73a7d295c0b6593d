"""Hostile inputs to the command line and the tokens route (issue 15, points 3, 4, 9, 10, 13, 14, 16).

``score`` runs as a child process bounded in time and memory (``tests/bounded.py``): a FIFO among the
images, undecodable file names, lone surrogates in metadata and arguments, formula-like prompts and huge
prompts must all end as rows of a complete CSV with exit code 0.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from helpers import tiny_models as tm
from helpers.bounded import HAS_PROC, describe, run_bounded
from clip_suite.cli import main
from clip_suite.cli.csv_out import MAX_CELL_CHARS, safe_cell
from clip_suite.clip_impl.text.pipeline import prompt_chunks
from clip_suite.nodes.hosting import tokens_route as tokens_api
from helpers.vision_fixtures import v_model  # noqa: F401

pytestmark = pytest.mark.skipif(not HAS_PROC or not hasattr(os, "mkfifo"), reason="needs /proc and FIFOs (Linux)")


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory, l_model, v_model):  # noqa: F811
    path = tmp_path_factory.mktemp("clip") / "clip_hf.safetensors"
    tm.write_hf_clip(path, l_model, v_model)
    return path


def _png(path, **text):
    info = PngInfo()
    for k, v in text.items():
        info.add_text(k, v)
    rng = np.random.default_rng(len(str(path)))
    Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(path, pnginfo=info)
    return path


def _graph(text_json: str) -> str:
    """A ComfyUI graph whose encoder text is the JSON string literal ``text_json`` (escapes kept as written)."""
    return (
        '{"3": {"class_type": "KSampler", "inputs": {"positive": ["6", 0], "negative": ["6", 0]}}, '
        '"6": {"class_type": "CLIPTextEncode", "inputs": {"text": ' + text_json + ', "clip": ["4", 1]}}}'
    )


SCORE = """
    import sys
    from clip_suite.cli import main
    sys.exit(main(["score", "--model", sys.argv[1], "--scale", "cosine", "--out", sys.argv[2], *sys.argv[3:]]))
"""


def _rows(path: Path) -> list[dict]:
    return list(csv.DictReader(path.open(newline="", encoding="utf-8")))


def test_score_writes_every_row_whatever_the_folder_holds(clip_file, tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    os.mkfifo(d / "x.png")  # 3: a named pipe with an image name
    _png(d / "surrogate.png", prompt=_graph('"a fox \\ud800 in snow"'))  # 10: a lone surrogate in metadata
    _png(d / "formula.png", parameters="=HYPERLINK(\"http://x\")\nSteps: 20")  # 13
    _png(d / "tab.png", prompt=_graph('"\\tplus"'))
    _png(d / "plus.png", parameters="+1+2, a fox\nSteps: 20")
    _png(d / "huge.png", parameters="a fox, " * 300_000 + "\nSteps: 20")  # 9: a 2 MB prompt
    _png(Path(os.fsdecode(bytes(d) + b"/caf\xe9.png")), parameters="a cafe\nSteps: 20")  # 10: non-UTF-8 name
    out = tmp_path / "scores.csv"
    o = run_bounded(SCORE, timeout=120, max_rss_mb=2500, args=[clip_file, out, "--prompts-from-metadata", d])
    assert o.ok, describe(o)
    rows = {Path(r["path"]).name: r for r in _rows(out)}
    assert set(rows) == {"x.png", "surrogate.png", "formula.png", "tab.png", "plus.png", "huge.png", "caf\\xe9.png"}
    assert "not a regular file" in rows["x.png"]["error"] and rows["x.png"]["score"] == ""
    assert rows["surrogate.png"]["score"] and rows["surrogate.png"]["prompt"] == "a fox \\ud800 in snow"
    assert rows["caf\\xe9.png"]["score"] and rows["caf\\xe9.png"]["prompt"] == "a cafe"
    assert rows["formula.png"]["prompt"] == "'=HYPERLINK(\"http://x\")"
    assert rows["tab.png"]["prompt"] == "'\tplus" and rows["plus.png"]["prompt"] == "'+1+2, a fox"
    huge = rows["huge.png"]
    assert huge["score"] and len(huge["prompt"]) <= MAX_CELL_CHARS and huge["error"].startswith("note: ")
    assert "cut" in huge["error"]
    assert "scored 6 of 7 images" in o.stdout


def test_score_prompt_from_stdin_and_undecodable_argument(clip_file, tmp_path):
    _png(tmp_path / "a.png")
    out = tmp_path / "s.csv"
    big = ("=" + "a red fox, " * 100_000).encode()  # 1.1 MB, a formula-looking start
    o = run_bounded(SCORE, timeout=120, max_rss_mb=2500, args=[clip_file, out, "--prompt", "-", tmp_path / "a.png"], stdin=big)
    assert o.ok, describe(o)
    (row,) = _rows(out)
    assert row["score"] and row["prompt"].startswith("'=a red fox") and len(row["prompt"]) < MAX_CELL_CHARS + 60
    assert "cut: 1,100,001 characters" in row["prompt"]
    # --prompt with bytes that are not UTF-8 (Python hands them over as lone surrogates)
    code = SCORE.replace("sys.argv[3:]", "['--prompt', 'caf' + chr(0xDCE9) + ' fox', *sys.argv[3:]]")
    o = run_bounded(code, timeout=120, max_rss_mb=2500, args=[clip_file, out, tmp_path / "a.png"])
    assert o.ok, describe(o)
    (row,) = _rows(out)
    assert row["score"] and row["prompt"] == "caf\\udce9 fox"


def test_safe_cell():
    assert safe_cell("=1+1") == "'=1+1" and safe_cell("@SUM(A1)") == "'@SUM(A1)" and safe_cell("-2") == "'-2"
    assert safe_cell("\rx") == "'\rx" and safe_cell("a = b") == "a = b"
    assert safe_cell("x\ud800y") == "x\\ud800y" and safe_cell("é", "ascii") == "\\xe9"
    long = safe_cell("b" * 1_000_000)
    assert long.startswith("b" * MAX_CELL_CHARS) and long.endswith("[... cut: 1,000,000 characters in all]")


# ----------------------------------------------------------------------------------------------- 16
def _with_stdin(monkeypatch, data: bytes):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))


def test_tokens_dash_reads_the_prompt_from_stdin(monkeypatch, capsys):
    text = "a, " * 70_000  # 210,000 characters: more than Linux allows in one argument (128 KB)
    _with_stdin(monkeypatch, text.encode() + b"\n")
    assert main(["tokens", "--json", "-"]) == 0
    report = json.loads(capsys.readouterr().out)
    expected = prompt_chunks(text)
    assert report["chunks"] == len(expected.chunks) > 1800 and report["tokens"] == 140_000
    _with_stdin(monkeypatch, b"(fox:1.2) \xff BREAK cat")  # undecodable bytes: U+FFFD, never a crash
    assert main(["tokens", "--json", "--weighting", "a1111", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["chunks"] == 2


def test_encode_prompt_dash_reads_stdin(monkeypatch, model_dir, tmp_path, capsys):
    from safetensors import safe_open

    _with_stdin(monkeypatch, ("a red fox, " * 40).encode())
    out = tmp_path / "c.safetensors"
    assert main(["encode", "--model", str(model_dir / "sd15.safetensors"), "--prompt", "-", "--out", str(out)]) == 0
    with safe_open(str(out), "pt") as f:
        assert f.metadata()["chunks"] == "3" and f.get_tensor("cond").shape[1] == 3 * 77


# ------------------------------------------------------------------------------------------- 4 and 14
def test_route_refuses_deep_json_with_400():
    with pytest.raises(tokens_api.RequestError) as info:
        tokens_api.parse_request(b"[" * 100_000 + b"]" * 100_000)
    assert info.value.status == 400 and "nested too deeply" in str(info.value)
    with pytest.raises(tokens_api.RequestError) as info:
        tokens_api.parse_request(b'{"text": ' + b"{" * 100_000)
    assert info.value.status == 400


def test_route_tokenizes_off_the_event_loop_within_a_time_budget(monkeypatch):
    web = pytest.importorskip("aiohttp.web")
    from aiohttp.test_utils import TestClient, TestServer

    real = tokens_api.tokens_report

    def slow(settings, library=None):
        time.sleep(1.2 if settings["text"] == "slow" else 0)
        return real(settings, library)

    monkeypatch.setattr(tokens_api, "tokens_report", slow)

    async def scenario():
        app = web.Application()
        app.router.add_post("/clip_suite/tokens", tokens_api.make_handler())
        gaps, stop = [], False

        async def ticker():  # the loop must keep running while a prompt is tokenized
            last = time.perf_counter()
            while not stop:
                await asyncio.sleep(0.02)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        async with TestClient(TestServer(app)) as client:
            tick = asyncio.create_task(ticker())
            slow_req = asyncio.create_task(client.post("/clip_suite/tokens", data=json.dumps({"text": "slow"})))
            await asyncio.sleep(0.1)
            t0 = time.perf_counter()
            quick = await client.post("/clip_suite/tokens", data=json.dumps({"text": "a cat"}))
            quick_s = time.perf_counter() - t0
            slow_resp = await slow_req
            monkeypatch.setattr(tokens_api, "TIME_BUDGET_S", 0.3)
            over = await client.post("/clip_suite/tokens", data=json.dumps({"text": "slow"}))
            stop = True
            await tick
            return quick.status, quick_s, slow_resp.status, over.status, await over.json(), max(gaps)

    quick_status, quick_s, slow_status, over_status, over_body, worst_gap = asyncio.run(scenario())
    assert quick_status == 200 and quick_s < 0.8, quick_s  # answered while the slow one was still running
    assert slow_status == 200 and worst_gap < 0.5, worst_gap
    assert over_status == 503 and "more than 0.3 s" in over_body["error"]
