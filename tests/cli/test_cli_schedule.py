"""``tokens``/``encode`` with ``--steps``/``--scheduler``: the A1111 schedule printed and written."""

import json

import torch
from safetensors import safe_open

from clip_suite.clip_impl.text.encode import EncodeSettings, encode_prompt
from clip_suite.clip_impl.weights.loading import load_clip
from clip_suite.clip_impl.a1111.schedule import step_texts
from clip_suite.clip_impl.a1111.sigmas import step_percents
from test_cli import cli

PROMPT = "a cat <lora:foo:0.8> [dog:cat:0.5] AND a bird"


def test_tokens_schedule_json():
    r = cli("tokens", PROMPT, "--chunking", "a1111", "--weighting", "a1111", "--steps", "20", "--scheduler", "karras",
            "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert {"tokens", "chunks", "chunk_tokens", "boundaries"} <= set(report)
    schedule = report["schedule"]
    assert schedule["steps"] == 20 and schedule["prompts"] == 3 and schedule["has_syntax"]
    texts = [(e["start_step"], e["end_step"], e["text"], e["tokens"], e["part"]) for e in schedule["entries"]]
    assert texts == [(0, 10, "a cat  dog", 3, 0), (11, 19, "a cat  cat", 3, 0), (0, 19, " a bird", 2, 1)]
    percents = step_percents("karras", 20)
    assert schedule["entries"][0]["end_percent"] == percents[11] == schedule["entries"][1]["start_percent"]
    assert "start_percent" not in schedule["entries"][2]  # covers every step
    assert any("LoRA tags found: foo 0.8" in n for n in schedule["notes"])


def test_tokens_schedule_text_and_errors():
    r = cli("tokens", "a [red|blue] ball", "--steps", "4")
    assert r.returncode == 0 and "schedule: 2 prompts over 4 steps (normal), 3 entries" in r.stdout
    assert "steps 0-1, percent 0.0000-" in r.stdout and "'a red ball'" in r.stdout
    assert cli("tokens", "x", "--steps", "-1").returncode == 2
    assert cli("tokens", "x", "--scheduler", "nope").returncode == 2


def test_encode_writes_every_entry(model_dir, tmp_path):
    out = tmp_path / "s.safetensors"
    prompt = "a [dog:cat:2] on a mat"
    r = cli("encode", "--model", model_dir / "sd15.safetensors", "--prompt", prompt, "--weighting", "a1111",
            "--steps", "5", "--scheduler", "exponential", "--out", out)
    assert r.returncode == 0, r.stderr
    assert "schedule: 2 prompts over 5 steps (exponential)" in r.stdout
    model = load_clip(model_dir / "sd15.safetensors")
    with safe_open(str(out), "pt") as f:
        schedule = json.loads(f.metadata()["schedule"])
        assert [(e["start_step"], e["end_step"]) for e in schedule["entries"]] == [(0, 2), (3, 4)]
        for i, e in enumerate(schedule["entries"]):
            assert e["text"] == step_texts(prompt, 5)[e["start_step"]]
            ref = encode_prompt(model, e["text"], EncodeSettings(weighting="a1111"), cache=None)
            assert torch.allclose(f.get_tensor(f"cond.{i}"), ref.cond, atol=1e-6)
        assert torch.equal(f.get_tensor("cond"), f.get_tensor("cond.0"))
