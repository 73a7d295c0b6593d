"""``score`` CLI, issue 17: rank within a prompt, --copy-to with --min-score/--top-per-prompt (exactly the passing
files, metadata intact, no duplicates on a second run), --aesthetic without a prompt, --scale logit with its
probability column, the truncated column, bf16, and the worker-pool image loader."""

import csv
import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from clip_suite.cli import main
from clip_suite.clip_impl.images.loader import ImageLoader
from clip_suite.clip_impl.scoring.aesthetic import aesthetic_scores, load_head
from clip_suite.clip_impl.weights.loading import load_clip
from clip_suite.clip_impl.images.preprocess import load_image_file, preprocess_images
from clip_suite.clip_impl.scoring.similarity import logit_factor, score_images
from helpers.vision_fixtures import v336_model, v_model, vg_model, vh_model, vision_dir  # noqa: F401

PROMPTS = ["a red fox in the snow", "a blue car on a bridge"]


def _png(path: Path, seed: int, prompt: str | None) -> None:
    info = PngInfo()
    if prompt is not None:
        info.add_text("parameters", f"{prompt}\nNegative prompt: ugly\nSteps: 20, Seed: {seed}")
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (30 + seed % 7, 34, 3), dtype=np.uint8)).save(path, pnginfo=info)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """10 PNGs, 5 per prompt (some in a subfolder), one without a prompt, one broken file."""
    d = tmp_path_factory.mktemp("ranked")
    (d / "sub").mkdir()
    for i in range(10):
        _png(d / ("sub" if i % 3 == 0 else "") / f"img_{i:02d}.png", i, PROMPTS[i % 2])
    _png(d / "no_prompt.png", 50, None)
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(40))
    os.utime(d / "img_01.png", (1_600_000_000, 1_600_000_000))  # an old mtime that a copy must keep
    return d


@pytest.fixture(scope="module")
def head_file(tmp_path_factory):
    torch.manual_seed(8)
    path = tmp_path_factory.mktemp("head") / "sa_0_4_tiny_linear.pth"
    torch.save(nn.Linear(64, 1).state_dict(), path)  # 64 = the tiny full CLIP's embedding width
    return path


def _run(capsys, *argv) -> tuple[int, list[dict], str]:
    code = main(["score", *map(str, argv)])
    captured = capsys.readouterr()
    rows = list(csv.DictReader(io.StringIO(captured.out))) if code == 0 else []
    return code, rows, captured.err


def test_rank_within_prompt_and_copy_exactly_the_passing_images(vision_dir, folder, tmp_path, capsys):
    model = vision_dir / "clip_hf.safetensors"
    target = tmp_path / "best"
    args = ["--model", model, "--prompts-from-metadata", "--scale", "cosine", "--batch-size", "3",
            "--copy-to", target, "--top-per-prompt", "2", "--out", "-", folder]
    code, rows, err = _run(capsys, *args)
    assert code == 0, err
    assert list(rows[0]) == ["path", "prompt", "score", "model", "error", "rank", "truncated"]
    scored = [r for r in rows if r["score"]]
    assert len(scored) == 10 and {r["rank"] for r in rows if not r["score"]} == {""}
    for prompt in PROMPTS:
        mine = sorted((r for r in scored if r["prompt"] == prompt), key=lambda r: -float(r["score"]))
        assert [int(r["rank"]) for r in mine] == [1, 2, 3, 4, 5], "rank 1 = best score among the prompt's images"
    passing = {r["path"] for r in scored if int(r["rank"]) <= 2}
    copied = {str(p.relative_to(target)) for p in target.rglob("*") if p.is_file()}
    assert copied == {os.path.relpath(p, folder) for p in passing}, "exactly the passing images, below their folder"
    for path in passing:
        dest = target / os.path.relpath(path, folder)
        assert dest.read_bytes() == Path(path).read_bytes()
        assert Image.open(dest).text["parameters"] == Image.open(path).text["parameters"]
        assert dest.stat().st_mtime == pytest.approx(Path(path).stat().st_mtime, abs=1e-3)
    assert "4 passed, copied 4 to" in err
    assert all(Path(r["path"]).exists() for r in rows), "nothing was moved or deleted"

    # A second run into the same folder copies nothing again.
    code, _, err = _run(capsys, *args)
    assert code == 0 and "copied 0 to" in err and "(4 already there)" in err
    assert len([p for p in target.rglob("*") if p.is_file()]) == 4

    # --min-score: exactly the images scoring at least X (on the chosen scale).
    threshold = sorted(float(r["score"]) for r in scored)[6]
    target2 = tmp_path / "above"
    code, rows2, _ = _run(capsys, "--model", model, "--prompts-from-metadata", "--scale", "cosine",
                          "--copy-to", target2, "--min-score", threshold, "--out", "-", folder)
    want = {Path(r["path"]).name for r in rows2 if r["score"] and float(r["score"]) >= threshold}
    assert len(want) == 4 and {p.name for p in target2.rglob("*") if p.is_file()} == want


def test_a_name_taken_by_another_file_gets_a_suffix(vision_dir, folder, tmp_path, capsys):
    target = tmp_path / "out"
    target.mkdir()
    (target / "img_01.png").write_bytes(b"another file")
    code, _, err = _run(capsys, "--model", vision_dir / "clip_hf.safetensors", "--prompt", "a fox",
                        "--copy-to", target, "--out", "-", folder / "img_01.png")
    assert code == 0 and "copied 1" in err
    assert (target / "img_01.png").read_bytes() == b"another file"
    assert (target / "img_01_1.png").read_bytes() == (folder / "img_01.png").read_bytes()


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--copy-to", "{folder}/sub/picked"], "inside the source folder"),
        (["--copy-to", "{folder}"], "inside the source folder"),
        (["--min-score", "0.1"], "give --copy-to DIR"),
        (["--top-per-prompt", "1"], "give --copy-to DIR"),
        (["--rank-by", "aesthetic"], "needs --aesthetic"),
        (["--workers", "-1"], "--workers -1"),
    ],
)
def test_copy_and_rank_arguments_refused(vision_dir, folder, capsys, extra, message):
    argv = ["--model", vision_dir / "clip_hf.safetensors", "--prompt", "x",
            *[a.format(folder=folder) for a in extra], "--out", "-", folder]
    code, _, err = _run(capsys, *argv)
    assert code == 2 and message in err
    assert not (folder / "sub" / "picked").exists()


def test_no_prompt_and_no_aesthetic_is_a_usage_error(vision_dir, folder):
    with pytest.raises(SystemExit) as e:
        main(["score", "--model", str(vision_dir / "clip_hf.safetensors"), "--out", "-", str(folder)])
    assert e.value.code == 2


def test_aesthetic_without_a_prompt(vision_dir, folder, head_file, capsys):
    model_file = vision_dir / "clip_hf.safetensors"
    code, rows, err = _run(capsys, "--model", model_file, "--aesthetic", head_file, "--out", "-", folder)
    assert code == 0, err
    assert list(rows[0]) == ["path", "prompt", "score", "model", "error", "rank", "truncated", "aesthetic"]
    good = [r for r in rows if r["aesthetic"]]
    assert len(good) == 11 and all(r["score"] == "" and r["prompt"] == "" and r["error"] == "" for r in good)
    model, head = load_clip(model_file), load_head(head_file)
    for r in good[:3]:
        want = aesthetic_scores(model, head, load_image_file(r["path"])).scores[0]
        assert float(r["aesthetic"]) == pytest.approx(want, abs=1e-5)
    ranked = sorted(good, key=lambda r: int(r["rank"]))
    assert [float(r["aesthetic"]) for r in ranked] == sorted((float(r["aesthetic"]) for r in good), reverse=True)
    assert "scored 11 of 12 images (1 failed" in err and "(aesthetic)" in err


def test_aesthetic_width_mismatch_exit_2(vision_dir, folder, tmp_path, capsys):
    head = tmp_path / "sa_0_4_vit_l_14_linear.pth"
    torch.save(nn.Linear(768, 1).state_dict(), head)
    code, _, err = _run(capsys, "--model", vision_dir / "clip_hf.safetensors", "--aesthetic", head, "--out", "-", folder)
    assert code == 2 and "768-wide" in err and "64-wide" in err and "clip_hf.safetensors" in err


def test_logit_scale_probability_and_truncated_columns(vision_dir, folder, head_file, capsys):
    model_file = vision_dir / "clip_hf.safetensors"
    code, rows, err = _run(capsys, "--model", model_file, "--prompts-from-metadata", "--scale", "logit",
                           "--aesthetic", head_file, "--out", "-", folder)
    assert code == 0, err
    assert list(rows[0])[-2:] == ["probability", "aesthetic"]
    model = load_clip(model_file)
    factor = logit_factor(model)[0]
    for prompt in PROMPTS:
        mine = [r for r in rows if r["prompt"] == prompt]
        logits = torch.tensor([float(r["score"]) for r in mine], dtype=torch.float64)
        probs = [float(r["probability"]) for r in mine]
        assert sum(probs) == pytest.approx(1.0, abs=1e-5)
        assert probs == pytest.approx(torch.softmax(logits, 0).tolist(), abs=2e-6)
    first = next(r for r in rows if r["score"])
    want = score_images(model, load_image_file(first["path"]), first["prompt"], "cosine", "a1111").scores[0]
    assert float(first["score"]) == pytest.approx(factor * want, rel=1e-5)
    no_prompt = next(r for r in rows if r["path"].endswith("no_prompt.png"))
    assert no_prompt["score"] == "" and "no prompt" in no_prompt["error"] and no_prompt["aesthetic"]

    long = " ".join(f"fox{i}" for i in range(80))
    code, rows, err = _run(capsys, "--model", model_file, "--prompt", long, "--out", "-", folder / "img_01.png")
    assert rows[0]["truncated"] == "yes" and "1 scored with a prompt truncated to 75 tokens" in err


def test_bf16_vision_tower_is_close_to_fp32(vision_dir, folder, capsys):
    model_file = vision_dir / "clip_hf.safetensors"
    scores = {}
    for precision in ("fp32", "bf16"):
        code, rows, err = _run(capsys, "--model", model_file, "--prompt", PROMPTS[0], "--scale", "cosine",
                               "--precision", precision, "--out", "-", folder)
        assert code == 0, err
        scores[precision] = [float(r["score"]) for r in rows if r["score"]]
    diff = max(abs(a - b) for a, b in zip(scores["fp32"], scores["bf16"]))
    assert 0 < diff < 0.02, f"bf16 max cosine error {diff}"


def test_image_loader_pool_gives_the_in_process_pixels_in_order(folder):
    paths = [str(folder / "img_01.png"), str(folder / "broken.png"), str(folder / "missing.png"),
             str(folder / "sub" / "img_03.png"), str(folder / "img_05.png")]
    with ImageLoader(workers=0) as loader:
        local = list(loader.load(paths, 32))
    with ImageLoader(workers=1, prefetch=2) as loader:
        pooled = list(loader.load(paths, 32))
    assert [i.index for i in pooled] == list(range(5)) and [i.path for i in pooled] == paths
    for a, b in zip(local, pooled):
        assert a.error == b.error
        assert (a.pixels is None and b.pixels is None) or torch.equal(a.pixels, b.pixels)
    assert pooled[1].error and "not found" in pooled[2].error and pooled[0].pixels.shape == (3, 32, 32)
    assert torch.equal(pooled[0].pixels, preprocess_images(load_image_file(paths[0]), 32)[0])


def die_on_doomed(img):
    """read_extra for the loader test: kills the worker process on a file named doomed*, as an OOM kill would."""
    if os.path.basename(img.filename).startswith("doomed"):
        os._exit(1)
    return os.path.basename(img.filename)


def test_image_loader_survives_a_worker_that_dies(folder, tmp_path):
    doomed = tmp_path / "doomed.png"
    doomed.write_bytes((folder / "img_05.png").read_bytes())
    paths = [str(folder / "img_01.png"), str(doomed), str(folder / "img_02.png"), str(folder / "img_04.png")]
    with ImageLoader(workers=1, prefetch=2) as loader:
        got = list(loader.load(paths, 32, read_extra=die_on_doomed))
    assert [i.index for i in got] == [0, 1, 2, 3]
    assert "died" in got[1].error and got[1].pixels is None
    for i in (0, 2, 3):
        assert got[i].error == "" and got[i].extra == os.path.basename(paths[i])
        assert torch.equal(got[i].pixels, preprocess_images(load_image_file(paths[i]), 32)[0])
