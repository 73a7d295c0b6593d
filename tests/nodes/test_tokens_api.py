"""The web extension's tokenizer route answers exactly what ``python -m clip_suite tokens --json`` prints."""

import asyncio
import json

import pytest

from helpers.shared_helpers import BAD_REQUESTS
from clip_suite.cli import main
from clip_suite.nodes.hosting.tokens_route import MAX_BODY_BYTES, RequestError, make_handler, parse_request, tokens_report

LONG = ", ".join(f"tag{i} (detail:1.{i % 9})" for i in range(120))  # ~500 tokens
PROMPTS = [
    ("a photo of a cat", "comfy", 20),
    ("", "comfy", 20),
    ("BREAK", "comfy", 20),
    ("first BREAK second BREAK BREAK third", "comfy", 20),
    ("first BREAK second BREAK BREAK third", "a1111", 20),
    ("(masterpiece:1.2), best quality, ((detailed)), [blurry]", "comfy", 20),
    ("(masterpiece:1.2), best quality, ((detailed)), [blurry]", "a1111", 20),
    (" ".join(["a"] * 70) + " , " + " ".join(["b"] * 20), "a1111", 0),
    (" ".join(["a"] * 70) + " , " + " ".join(["b"] * 20), "a1111", 5),
    (" ".join(["a"] * 70) + " , " + " ".join(["b"] * 20), "a1111", 20),
    (" ".join(["a"] * 70) + " , " + " ".join(["b"] * 20), "a1111", 74),
    (" ".join(["a"] * 70) + " , " + " ".join(["b"] * 20), "comfy", 20),
    (LONG, "comfy", 20),
    (LONG, "a1111", 20),
    ("日本語のプロンプト, café crème, 😀", "comfy", 20),
    ("\\(escaped\\) (weighted:0.5) ((((", "comfy", 20),
    ("(a BREAK b:1.2) c", "a1111", 20),
    (" ".join(["w"] * 75) + " BREAK x", "a1111", 20),
    (" ".join(["w"] * 76), "comfy", 20),
    ("embedding:missing_one, a cat", "comfy", 20),
]


def cli_json(text, chunking, backtrack, capsys):
    assert main(["tokens", "--json", "--chunking", chunking, "--comma-backtrack", str(backtrack), text]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("text,chunking,backtrack", PROMPTS)
def test_route_equals_cli(text, chunking, backtrack, capsys):
    body = json.dumps({"text": text, "chunking": chunking, "comma_backtrack": backtrack}).encode()
    assert tokens_report(parse_request(body)) == cli_json(text, chunking, backtrack, capsys)


def test_defaults_are_comfy_and_20():
    assert parse_request(b'{"text": "x"}') == {"text": "x", "chunking": "comfy", "comma_backtrack": 20, "weighting": "comfy"}


@pytest.mark.parametrize("body,status", BAD_REQUESTS)
def test_bad_requests(body, status):
    with pytest.raises(RequestError) as info:
        parse_request(body)
    assert info.value.status == status and str(info.value)


def test_aiohttp_handler_round_trip(tmp_path, monkeypatch):
    web = pytest.importorskip("aiohttp.web")
    from aiohttp.test_utils import TestClient, TestServer

    opened = []
    monkeypatch.setattr("builtins.open", lambda *a, **k: opened.append(a) or (_ for _ in ()).throw(AssertionError(a)))

    async def scenario():
        app = web.Application()
        app.router.add_post("/clip_suite/tokens", make_handler())
        async with TestClient(TestServer(app)) as client:
            ok = await client.post("/clip_suite/tokens", data=json.dumps({"text": "a cat BREAK a dog"}))
            bad = await client.post("/clip_suite/tokens", data=b"{{{")
            big = await client.post("/clip_suite/tokens", data=b"x" * (MAX_BODY_BYTES + 10))
            return ok.status, await ok.json(), bad.status, await bad.json(), big.status

    status, report, bad_status, bad_body, big_status = asyncio.run(scenario())
    assert status == 200 and report["chunks"] == 2 and report["chunk_tokens"] == [2, 2]
    assert bad_status == 400 and "error" in bad_body and big_status == 413
    assert not opened  # the route never opens a file
