"""The tokenizer route with the encoders' ``steps``/``scheduler``: a ``schedule`` next to the usual keys."""

import json

import pytest

from clip_suite.cli import main
from clip_suite.nodes.hosting.tokens_route import RequestError, parse_request, tokens_report


def test_route_schedule_matches_cli(capsys):
    text = "a cat <lora:foo:0.8> [dog:cat:0.5] AND a [red|blue] bird"
    body = json.dumps({"text": text, "chunking": "a1111", "weighting": "a1111", "steps": 20, "scheduler": "karras"})
    route = tokens_report(parse_request(body.encode()))
    assert main(["tokens", "--json", "--chunking", "a1111", "--weighting", "a1111", "--steps", "20",
                 "--scheduler", "karras", text]) == 0
    cli = json.loads(capsys.readouterr().out)
    assert {k: v for k, v in route.items() if k != "schedule"} == {k: v for k, v in cli.items() if k != "schedule"}
    no_percents = [{k: v for k, v in e.items() if not k.endswith("_percent")} for e in cli["schedule"]["entries"]]
    assert route["schedule"]["entries"] == no_percents
    assert route["schedule"]["prompts"] == 4 and route["schedule"]["steps"] == 20


def test_route_schedule_at_steps_zero_and_plain_prompts():
    report = tokens_report(parse_request(b'{"text": "a [b:c:3]", "steps": 0}'))
    assert report["schedule"]["has_syntax"] and report["schedule"]["steps"] == 0
    plain = tokens_report(parse_request(b'{"text": "a cat", "steps": 20}'))
    assert not plain["schedule"]["has_syntax"] and plain["schedule"]["prompts"] == 1
    assert "schedule" not in tokens_report(parse_request(b'{"text": "a [b:c:3]"}'))


@pytest.mark.parametrize("body", [b'{"text": "x", "steps": -1}', b'{"text": "x", "steps": 10001}',
                                  b'{"text": "x", "steps": true}', b'{"text": "x", "steps": 5, "scheduler": "nope"}'])
def test_route_refuses_bad_steps(body):
    with pytest.raises(RequestError) as e:
        parse_request(body)
    assert e.value.status == 400
