"""``python -m clip_suite score``: a folder of 50 PNGs with both metadata styles, broken files, exit codes,
progress bar on a terminal only."""

import csv
import io
import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from clip_suite.cli import main
from clip_suite.clip_impl.weights.loading import load_clip
from clip_suite.clip_impl.images.preprocess import load_image_file
from clip_suite.clip_impl.scoring.similarity import score_images
from helpers.vision_fixtures import v336_model, v_model, vg_model, vh_model, vision_dir  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]


def _graph(text: str, sdxl: bool = False) -> dict:
    encoder = (
        {"class_type": "CLIPTextEncodeSDXL", "inputs": {"text_g": text, "text_l": "other", "clip": ["4", 1]}}
        if sdxl
        else {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": ["4", 1]}}
    )
    return {
        "3": {"class_type": "KSamplerAdvanced" if sdxl else "KSampler", "inputs": {"positive": ["6", 0], "negative": ["7", 0]}},
        "6": encoder,
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "negative words", "clip": ["4", 1]}},
    }


def _png(path: Path, seed: int, **chunks) -> None:
    info = PngInfo()
    for k, v in chunks.items():
        info.add_text(k, v)
    rng = np.random.default_rng(seed)
    h, w = 24 + seed % 17, 30 + seed % 11
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path, pnginfo=info)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """50 images: 20 ComfyUI (5 of them SDXL, in a subfolder), 16 A1111, 5 without prompt, 9 broken."""
    d = tmp_path_factory.mktemp("images")
    (d / "sub" / "deeper").mkdir(parents=True)
    expected = {}  # path -> (prompt or "", scored?)
    for i in range(20):
        sdxl = i >= 15
        path = d / ("sub/deeper" if sdxl else "") / f"comfy_{i:02d}.png"
        text = f"comfy prompt {i}, a (red:1.2) fox"
        _png(path, i, prompt=json.dumps(_graph(text, sdxl)), workflow="{}")
        expected[str(path)] = (text, True)
    for i in range(16):
        path = d / "sub" / f"a1111_{i:02d}.png"
        text = f"a1111 prompt {i}, a [blue] car"
        _png(path, 100 + i, parameters=f"{text}\nNegative prompt: ugly\nSteps: 20, Sampler: Euler a, Seed: {i}")
        expected[str(path)] = (text, True)
    for i in range(5):
        path = d / f"plain_{i}.png"
        _png(path, 200 + i)
        expected[str(path)] = ("", False)
    for i in range(5):
        path = d / f"garbage_{i}.png"
        path.write_bytes(os.urandom(64 + i))
        expected[str(path)] = ("", False)
    whole = d / "plain_0.png"
    for i in range(4):
        path = d / f"truncated_{i}.png"
        data = whole.read_bytes()
        path.write_bytes(data[: len(data) // (2 + i)])
        expected[str(path)] = ("", False)
    (d / "notes.txt").write_text("not an image")
    (d / "sub" / "graph.json").write_text("{}")
    assert len(expected) == 50
    return d, expected


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(ROOT / "tests")]))
    return env


def _cmd(model: Path, out: str, *paths, extra=()):
    return [sys.executable, "-m", "clip_suite", "score", "--model", str(model), "--prompts-from-metadata",
            "--scale", "cosine", "--batch-size", "7", "--out", out, *extra, *map(str, paths)]


def test_folder_of_50_pngs_piped(vision_dir, image_folder, tmp_path):
    folder, expected = image_folder
    out = tmp_path / "scores.csv"
    model_file = vision_dir / "clip_hf.safetensors"
    proc = subprocess.run(_cmd(model_file, str(out), folder), capture_output=True, text=True, env=_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr and "scoring [" not in proc.stderr  # no progress bar when piped
    rows = list(csv.DictReader(out.open(newline="", encoding="utf-8")))
    # The five original columns keep their order; rank and truncated (issue 17) are appended.
    assert len(rows) == 50 and list(rows[0]) == ["path", "prompt", "score", "model", "error", "rank", "truncated"]
    assert {r["path"] for r in rows} == set(expected)
    for r in rows:
        text, scored = expected[r["path"]]
        assert r["prompt"] == text and r["model"] == "clip_hf.safetensors"
        if scored:
            assert r["error"] == "" and len(r["score"].split(".")[1]) == 6
            assert r["rank"] == "1" and r["truncated"] == "no"  # each prompt is its own image's
        else:
            assert r["score"] == "" and r["error"] and r["rank"] == ""
    reasons = {Path(r["path"]).name.split("_")[0]: r["error"] for r in rows if r["error"]}
    assert "no prompt in the metadata" in reasons["plain"]
    assert "not an image" in reasons["garbage"] and "cannot read the image" in reasons["truncated"]
    assert "scored 36 of 50 images (14 failed" in proc.stdout and "mean " in proc.stdout and "min " in proc.stdout

    # The CSV scores are the library's: the same image and prompt scored in-process.
    model = load_clip(model_file)
    for r in [rows[0], rows[-1], next(r for r in rows if "a1111" in r["path"])]:
        if r["score"]:
            syntax = "a1111" if "a1111" in r["path"] else "comfy"
            want = score_images(model, load_image_file(r["path"]), r["prompt"], "cosine", syntax).scores[0]
            assert float(r["score"]) == pytest.approx(want, abs=1e-6)


def test_progress_bar_on_a_terminal(vision_dir, image_folder, tmp_path):
    folder, _ = image_folder
    master, slave = pty.openpty()
    out = tmp_path / "scores.csv"
    cmd = _cmd(vision_dir / "clip_hf.safetensors", str(out), folder / "sub" / "deeper", folder / "plain_1.png")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=slave, env=_env())
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    proc.wait(timeout=300)
    os.close(master)
    assert proc.returncode == 0
    text = seen.decode(errors="replace")
    assert "scoring [" in text and "\r" in text and "6/6" in text
    assert "scored 5 of 6 images" in proc.stdout.read().decode()


def test_fixed_prompt_to_stdout(vision_dir, image_folder, capsys):
    folder, _ = image_folder
    paths = [str(folder / "plain_0.png"), str(folder / "garbage_0.png")]
    code = main(["score", "--model", str(vision_dir / "clip_l.safetensors"), "--model-2",
                 str(vision_dir / "clip_vision_l.safetensors"), "--prompt", "a (cat:1.3) BREAK on a mat",
                 "--scale", "clipscore_2_5", "--out", "-", *paths])
    captured = capsys.readouterr()
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(captured.out)))
    assert [r["prompt"] for r in rows] == ["a (cat:1.3) BREAK on a mat"] * 2
    assert rows[0]["score"] and rows[1]["error"] and rows[0]["model"] == "clip_l.safetensors+clip_vision_l.safetensors"
    model = load_clip([vision_dir / "clip_l.safetensors", vision_dir / "clip_vision_l.safetensors"])
    want = score_images(model, load_image_file(paths[0]), "a (cat:1.3) BREAK on a mat", "clipscore_2_5").scores[0]
    assert float(rows[0]["score"]) == pytest.approx(want, abs=1e-6)
    assert "scored 1 of 2 images" in captured.err


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--model", "{d}/sd15.safetensors", "--prompt", "x"], "no CLIP vision tower"),
        (["--model", "{d}/clip_g.safetensors", "--model-2", "{d}/clip_vision_l.safetensors", "--prompt", "x"], "not the same CLIP"),
        (["--model", "{d}/sd15.safetensors", "--model-2", "{d}/clip_vision_l.safetensors", "--prompt", "x"], "no text_projection"),
        (["--model", "{d}/missing.safetensors", "--prompt", "x"], "does not exist"),
        (["--model", "{d}/clip_hf.safetensors", "--prompt", "  "], "--prompt is empty"),
        (["--model", "{d}/clip_hf.safetensors", "--prompt", "BREAK"], "no words to score"),
    ],
)
def test_bad_model_or_prompt_exit_2(vision_dir, image_folder, capsys, tmp_path, argv, message):
    folder, _ = image_folder
    args = ["score", *[a.format(d=vision_dir) for a in argv], "--out", str(tmp_path / "o.csv"), str(folder / "plain_0.png")]
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_no_images_exit_2(vision_dir, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    args = ["score", "--model", str(vision_dir / "clip_hf.safetensors"), "--prompt", "x", "--out", str(tmp_path / "o.csv"), str(tmp_path / "empty")]
    assert main(args) == 2 and "no .png/.jpg/.jpeg/.webp images" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra",
    [
        ["--prompt", "x", "--prompts-from-metadata"],
        ["--prompt", "x", "--batch-size", "0"],
        ["--prompt", "x", "--scale", "percent"],
        [],  # neither --prompt nor --prompts-from-metadata
    ],
)
def test_bad_arguments_exit_2(vision_dir, tmp_path, extra):
    with pytest.raises(SystemExit) as e:
        main(["score", "--model", str(vision_dir / "clip_hf.safetensors"), *extra, "--out", str(tmp_path / "o.csv"), "x.png"])
    assert e.value.code == 2


def test_truncated_prompts_are_counted_and_bad_out_folder(vision_dir, image_folder, capsys, tmp_path):
    folder, _ = image_folder
    model = str(vision_dir / "clip_hf.safetensors")
    long = " ".join(["fox"] * 90)
    assert main(["score", "--model", model, "--prompt", long, "--out", "-", str(folder / "plain_0.png")]) == 0
    assert "1 scored with a prompt truncated to 75 tokens" in capsys.readouterr().err
    bad = str(tmp_path / "no_such_folder" / "o.csv")
    assert main(["score", "--model", model, "--prompt", "x", "--out", bad, str(folder / "plain_0.png")]) == 2
    assert "does not exist" in capsys.readouterr().err
