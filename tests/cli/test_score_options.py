"""``score``'s typed options: built once from the parsed arguments, checked in the same order with the same
messages, and passed to the helpers instead of the argparse namespace."""

from __future__ import annotations

import ast
import dataclasses
import io
import sys
from pathlib import Path

import pytest

from clip_suite.cli import build_parser
from clip_suite.cli.score_options import RANK_BYS, ScoreOptions

ROOT = Path(__file__).resolve().parents[2]


def _options(tmp_path, *argv) -> ScoreOptions:
    model = tmp_path / "model.safetensors"
    model.write_bytes(b"")
    args = build_parser().parse_args(["score", "--model", str(model), "--out", str(tmp_path / "s.csv"), *argv])
    return ScoreOptions.from_args(args)


def test_defaults(tmp_path):
    opts = _options(tmp_path, "--prompt", "a cat", str(tmp_path))
    assert (opts.prompt, opts.prompts_from_metadata, opts.has_prompt) == ("a cat", False, True)
    assert (opts.scale, opts.fit, opts.rank_by, opts.weighting) == ("clipscore_100", "crop", "score", "comfy")
    assert (opts.batch_size, opts.workers, opts.precision, opts.device) == (8, None, "auto", "auto")
    assert (opts.copy_to, opts.min_score, opts.top_per_prompt, opts.aesthetic, opts.model_2) == (None,) * 5
    assert opts.images == (str(tmp_path),)
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.scale = "logit"  # type: ignore[misc]


def test_values_are_carried_over(tmp_path):
    head = tmp_path / "head.pth"
    opts = _options(
        tmp_path, "--prompts-from-metadata", "--aesthetic", str(head), "--scale", "logit", "--fit", "pad",
        "--rank-by", "aesthetic", "--batch-size", "3", "--workers", "0", "--weighting", "a1111",
        "--precision", "bf16", "--device", "cpu", "--copy-to", str(tmp_path / "best"), "--min-score", "0.5",
        "--top-per-prompt", "2", "a.png", "b.png",
    )
    assert (opts.prompt, opts.prompts_from_metadata, opts.aesthetic) == (None, True, str(head))
    assert (opts.scale, opts.fit, opts.rank_by, opts.batch_size, opts.workers) == ("logit", "pad", "aesthetic", 3, 0)
    assert (opts.weighting, opts.precision, opts.device) == ("a1111", "bf16", "cpu")
    assert (opts.copy_to, opts.min_score, opts.top_per_prompt) == (str(tmp_path / "best"), 0.5, 2)
    assert opts.images == ("a.png", "b.png")


def test_rank_by_follows_what_is_scored(tmp_path):
    assert RANK_BYS == ("score", "aesthetic")
    assert _options(tmp_path, "--aesthetic", "h.pth", "x.png").rank_by == "aesthetic"
    assert _options(tmp_path, "--prompt", "p", "--aesthetic", "h.pth", "x.png").rank_by == "score"
    assert not _options(tmp_path, "--aesthetic", "h.pth", "x.png").has_prompt


def test_prompt_dash_is_read_from_stdin_once(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"a (red:1.2) fox\n"), encoding="utf-8"))
    assert _options(tmp_path, "--prompt", "-", "x.png").prompt == "a (red:1.2) fox"


@pytest.mark.parametrize("argv, message", [
    (["--prompt", " ", "x.png"], "--prompt is empty"),
    (["--aesthetic", "h.pth", "--rank-by", "score", "x.png"], "--rank-by score needs"),
    (["--prompt", "p", "--rank-by", "aesthetic", "x.png"], "--rank-by aesthetic needs --aesthetic HEAD"),
    (["--prompt", "p", "--min-score", "1", "x.png"], "give --copy-to DIR"),
    (["--prompt", "p", "--workers", "-1", "x.png"], "--workers -1; use 0"),
    (["--prompt", "p", "--model-2", "/no/such/file", "x.png"], "--model-2 /no/such/file does not exist"),
])
def test_bad_combinations_raise_value_error(tmp_path, argv, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        _options(tmp_path, *argv)


def test_no_prompt_and_no_head_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        _options(tmp_path, "x.png")
    assert e.value.code == 2
    assert "give --prompt TEXT or --prompts-from-metadata" in capsys.readouterr().err


def test_score_helpers_take_no_namespace():
    """Only ``add_arguments`` (the parser) and ``run`` (the entry point) of ``cli/score.py`` see ``args``."""
    tree = ast.parse((ROOT / "cli" / "score.py").read_text(encoding="utf-8"))
    takers = sorted(
        node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)
        if any(a.arg == "args" for a in node.args.args + node.args.kwonlyargs)
    )
    assert takers == ["run"]
    run = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "run")
    uses = [n for n in ast.walk(run) if isinstance(n, ast.Name) and n.id == "args"]
    assert len(uses) == 1  # ScoreOptions.from_args(args), once
