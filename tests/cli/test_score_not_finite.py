"""``score``: a NaN score never passes --min-score and the CSV says why; --min-score must be finite; scorer
files that claim gigabytes are refused in bounded memory with one line (issue 26, points 4, 14 and 15)."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
import torch
from PIL import Image

from clip_suite.cli import main
from helpers.bounded import HAS_PROC, describe, run_bounded
from helpers.hostile_files import deflated_torch_zip
from helpers.vision_fixtures import v336_model, v_model, vg_model, vh_model, vision_dir  # noqa: F401


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(4)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (30, 34, 3), dtype=np.uint8)).save(d / f"img_{i}.png")
    return d


@pytest.fixture(scope="module")
def overflow_head(tmp_path_factory):
    """A v2-layout head whose weights are finite (3e38 < float32's 3.4e38) but whose products overflow on any
    embedding: 3e38 x, then 1e30 times every coordinate summed (inf and -inf meet: NaN)."""
    path = tmp_path_factory.mktemp("head") / "overflow.pth"
    torch.save({"layers.0.weight": torch.eye(64) * 3e38, "layers.0.bias": torch.zeros(64),
                "layers.2.weight": torch.full((1, 64), 1e30), "layers.2.bias": torch.zeros(1)}, path)
    return path


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN", "a lot"])
def test_min_score_must_be_a_finite_number(vision_dir, folder, tmp_path, capsys, value):  # noqa: F811
    with pytest.raises(SystemExit) as e:
        main(["score", "--model", str(vision_dir / "clip_hf.safetensors"), "--prompt", "a cat", "--copy-to",
              str(tmp_path / "out"), f"--min-score={value}", "--out", "-", str(folder)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "argument --min-score" in err and ("not a finite number" in err or "not a number" in err)
    assert not (tmp_path / "out").exists()


def test_nan_aesthetic_scores_never_pass_min_score_and_say_why(vision_dir, folder, overflow_head, tmp_path, capsys):  # noqa: F811
    target = tmp_path / "best"
    code = main(["score", "--model", str(vision_dir / "clip_hf.safetensors"), "--aesthetic", str(overflow_head),
                 "--copy-to", str(target), "--min-score", "0", "--workers", "0", "--out", "-", str(folder)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    rows = list(csv.DictReader(io.StringIO(captured.out)))
    assert len(rows) == 4
    for row in rows:
        assert row["aesthetic"] == "" and row["rank"] == ""
        assert row["error"].startswith("aesthetic score is not finite (nan): the aesthetic head overflow.pth "
                                       "overflowed float32"), row["error"]
    assert not target.exists() or not any(target.iterdir())  # 0 of 4 copied (before: 4 of 4)
    assert "4 with a score that is not finite" in captured.err and "0 passed, copied 0" in captured.err


@pytest.mark.skipif(not HAS_PROC, reason="the time/RSS bounds read /proc (Linux)")
def test_deflated_head_or_model_is_one_line_in_bounded_memory(vision_dir, folder, tmp_path):  # noqa: F811
    """A 256 KB .pth unpacking to 256 MiB, as --aesthetic and as --model: exit 2 with one line, under 400 MB
    (the interpreter with torch is about 260 MB; before, loading alone peaked at 0.97 GB and 0.52 GB)."""
    bomb = deflated_torch_zip(tmp_path / "bomb.pth", 64 * 2**20)
    code = "import sys; from clip_suite.cli import main; sys.exit(main(sys.argv[1:]))"
    for argv in (["--model", vision_dir / "clip_hf.safetensors", "--aesthetic", bomb],
                 ["--model", bomb, "--prompt", "a cat"]):
        o = run_bounded(code, timeout=60, max_rss_mb=400,
                        args=["score", *argv, "--workers", "0", "--out", tmp_path / "o.csv", folder])
        assert o.returncode == 2 and not o.killed, describe(o)
        assert len(o.stderr.strip().splitlines()) == 1 and "Traceback" not in o.stderr, o.stderr
        assert "bomb.pth: entry 'archive/data/0' unpacks to 256.0 MiB" in o.stderr


def test_corrupt_config_json_is_one_line(vision_dir, folder, tmp_path, capsys):  # noqa: F811
    import shutil

    model = shutil.copytree(vision_dir / "clip_h_folder", tmp_path / "clip_h_folder")
    (model / "config.json").write_text('{"vision_config": {"num_attention_heads": Infinity}}')
    code = main(["score", "--model", str(model), "--prompt", "a cat", "--workers", "0", "--out", "-", str(folder)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "config.json is not valid JSON (Infinity is not a JSON number)" in err
