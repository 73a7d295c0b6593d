"""``python -m clip_suite search``: 300 generated images ranked as transformers' features rank them; the
index (default location, incremental update, other model, truncated/corrupt files, SIGKILL mid-index)."""

import csv
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from clip_suite.cli import main
from clip_suite.clip_impl.images.preprocess import load_image_file, preprocess_images
from clip_suite.clip_impl.scoring.search_index import EmbeddingIndex, default_index_path, user_cache_dir
from clip_suite.clip_impl.tokenizer import BOS_ID, EOS_ID, get_tokenizer
from helpers.vision_fixtures import v336_model, v_model, vg_model, vh_model, vision_dir  # noqa: F401
from helpers.bounded import HAS_PROC
from helpers.processes import marked_env, survivors

ROOT = Path(__file__).resolve().parents[1]
TIE = 1e-5  # reference cosines closer than this may rank either way


def _png(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)


@pytest.fixture()
def folder(tmp_path, monkeypatch):
    """300 tiny PNGs in a folder and a subfolder (plus files that are not images); a private cache dir."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    d = tmp_path / "outputs"
    (d / "night").mkdir(parents=True)
    for i in range(300):
        _png(d / ("night" if i % 3 == 0 else "") / f"img_{i:03d}.png", i)
    (d / "notes.txt").write_text("not an image")
    return d


def _search(capsys, model, *args):
    code = main(["search", "--model", str(model), *map(str, args)])
    out = capsys.readouterr()
    lines = [line.split("  ", 1) for line in out.out.splitlines()]
    return code, [(float(c), p) for c, p in lines], out.err.strip().splitlines()


def _text_reference(l_model, text):
    ids = get_tokenizer().encode(text)
    row = [BOS_ID, *ids, EOS_ID] + [EOS_ID] * (75 - len(ids))
    with torch.no_grad():
        return F.normalize(l_model(input_ids=torch.tensor([row])).text_embeds, dim=-1)[0]


def _image_reference(v_model, paths):
    images = torch.cat([load_image_file(p) for p in paths])
    with torch.no_grad():
        return F.normalize(v_model(pixel_values=preprocess_images(images, 32)).image_embeds, dim=-1)


def _assert_ranking(ranked, v_model, query):
    """Our order is the order of transformers' cosines (up to reference ties), and the cosines agree."""
    paths = [p for _, p in ranked]
    ref = (_image_reference(v_model, paths) @ query).tolist()
    assert max(abs(c - r) for (c, _), r in zip(ranked, ref)) <= 1e-4  # 4 decimals printed
    want = sorted(range(len(paths)), key=lambda i: -ref[i])
    for pos, (ours, theirs) in enumerate(zip(range(len(paths)), want)):
        assert ours == theirs or abs(ref[ours] - ref[theirs]) <= TIE, f"rank {pos}: {paths[ours]} vs {paths[theirs]}"


def test_ranking_and_incremental_index(vision_dir, l_model, v_model, folder, capsys):
    model = vision_dir / "clip_hf.safetensors"
    before = sorted(os.listdir(folder)) + sorted(os.listdir(folder / "night"))
    code, ranked, err = _search(capsys, model, "--text", "a red umbrella in the rain", folder)
    assert code == 0 and len(ranked) == 300
    assert err[-1] == "index: 300 new, 0 removed, 0 reused"
    _assert_ranking(ranked, v_model, _text_reference(l_model, "a red umbrella in the rain"))
    index_file = default_index_path(folder)
    assert index_file.is_file() and str(index_file).startswith(str(user_cache_dir()))
    assert str(user_cache_dir()) == os.environ["XDG_CACHE_HOME"]
    assert sorted(os.listdir(folder)) + sorted(os.listdir(folder / "night")) == before, "nothing written there"

    # Another query: every embedding comes from the index; an image query finds itself first.
    query = folder / "img_010.png"
    code, ranked, err = _search(capsys, model, "--image", query, folder)
    assert err[-1] == "index: 0 new, 0 removed, 300 reused"
    assert ranked[0] == (1.0, str(query))
    _assert_ranking(ranked, v_model, _image_reference(v_model, [query])[0])

    # 5 new images, 3 deleted: only the new ones are embedded, the deleted ones are gone.
    deleted = [folder / "img_001.png", folder / "night" / "img_003.png", folder / "img_299.png"]
    for path in deleted:
        path.unlink()
    added = [folder / "night" / f"new_{i}.png" for i in range(5)]
    for i, path in enumerate(added):
        _png(path, 1000 + i)
    code, ranked, err = _search(capsys, model, "--text", "a cat", folder)
    assert err[-1] == "index: 5 new, 3 removed, 297 reused"
    listed = {p for _, p in ranked}
    assert len(ranked) == 302 and not listed & {str(p) for p in deleted} and {str(p) for p in added} <= listed
    _assert_ranking(ranked, v_model, _text_reference(l_model, "a cat"))

    # A file rewritten in place (new content, new mtime) is embedded again.
    _png(folder / "img_002.png", 5000)
    code, ranked, err = _search(capsys, model, "--text", "a cat", folder)
    assert err[-1] == "index: 1 new, 0 removed, 301 reused"
    _assert_ranking(ranked, v_model, _text_reference(l_model, "a cat"))


def test_top_k_and_csv(vision_dir, folder, tmp_path, capsys):
    model = vision_dir / "clip_hf.safetensors"
    code, ranked, _ = _search(capsys, model, "--text", "a dog", folder / "night")
    out = tmp_path / "hits.csv"
    assert main(["search", "--model", str(model), "--text", "a dog", "--top", "7", "--out", str(out),
                 str(folder / "night")]) == 0
    rows = list(csv.DictReader(out.open(newline="", encoding="utf-8")))
    assert list(rows[0]) == ["rank", "cosine", "path"] and [r["rank"] for r in rows] == [str(i) for i in range(1, 8)]
    assert [r["path"] for r in rows] == [p for _, p in ranked[:7]]
    assert capsys.readouterr().err.strip().splitlines()[-1] == "index: 0 new, 0 removed, 100 reused"
    assert main(["search", "--model", str(model), "--text", "a dog", str(folder / "night")]) == 0
    assert [line.split("  ", 1)[1] for line in capsys.readouterr().out.splitlines()] == [p for _, p in ranked]
    # A file named beside its folder is listed once, from the folder's index.
    code, again, err = _search(capsys, model, "--text", "a dog", folder / "night", folder / "night" / "img_000.png")
    assert again == ranked and err[-1] == "index: 0 new, 0 removed, 100 reused"


def test_bad_index_files_are_rebuilt(vision_dir, folder, tmp_path, capsys):
    small = folder / "night"
    index = tmp_path / "my.index"
    model = vision_dir / "clip_hf.safetensors"
    first = _search(capsys, model, "--index", index, "--text", "a", small)
    assert first[2][-1] == "index: 100 new, 0 removed, 0 reused"
    good = index.read_bytes()
    # 500 random bytes are not an index of ours: refused with exit code 2 and left as they are (a file of
    # unknown content may be anything of the user's); our own truncated, empty or damaged index is rebuilt.
    garbage = os.urandom(500)
    index.write_bytes(garbage)
    assert main(["search", "--model", str(model), "--index", str(index), "--text", "a", str(small)]) == 2
    assert "is not a CLIP Suite image index" in capsys.readouterr().err and index.read_bytes() == garbage
    cases = {
        "truncated": good[: len(good) // 2],
        "empty": b"",
        "corrupt": good[:-40] + bytes(b ^ 0x55 for b in good[-40:]),  # same length, damaged embeddings
    }
    messages = {"truncated": "truncated or corrupt", "empty": "truncated or corrupt",
                "corrupt": "fails its checksum"}
    for name, data in cases.items():
        index.write_bytes(data)
        code, ranked, err = _search(capsys, model, "--index", index, "--text", "a", small)
        assert code == 0 and len(ranked) == 100, name
        assert messages[name] in err[0] and "rebuilding it" in err[0] and str(index) in err[0], (name, err)
        assert err[-1] == "index: 100 new, 0 removed, 0 reused", name
        assert len(EmbeddingIndex.read(index)) == 100
    # Another model (another vision tower) never reuses these embeddings.
    code, ranked, err = _search(capsys, vision_dir / "clip_hf_336.safetensors", "--index", index, "--text", "a", small)
    assert code == 0 and "made with another model" in err[0] and err[-1] == "index: 100 new, 0 removed, 0 reused"
    # The same weights in OpenCLIP names are the same model: everything is reused.
    _search(capsys, model, "--index", index, "--text", "a", small)
    code, _, err = _search(capsys, vision_dir / "clip_openclip.safetensors", "--index", index, "--text", "a", small)
    assert err == ["index: 0 new, 0 removed, 100 reused"]


def test_unreadable_images_and_bad_arguments(vision_dir, folder, capsys):
    model = vision_dir / "clip_hf.safetensors"
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    code, ranked, err = _search(capsys, model, "--text", "a", folder / "broken.png", folder / "night")
    assert code == 0 and len(ranked) == 100
    assert any(line.startswith(f"skipped {folder / 'broken.png'}: not an image") for line in err)
    for argv, message in [
        (["--text", "  "], "no words to score"),
        (["--text", "a", "--top", "-1"], "--top -1"),
        (["--image", str(folder / "missing.png")], "--image"),
        (["--image", str(folder / "broken.png")], "not an image"),
        (["--text", "a", "--out", str(folder / "no" / "such" / "x.csv")], "does not exist"),
    ]:
        assert main(["search", "--model", str(model), *argv, str(folder / "night")]) == 2
        assert message in capsys.readouterr().err
    empty = folder / "empty_dir"
    empty.mkdir()
    assert main(["search", "--model", str(model), "--text", "a", str(empty)]) == 2
    assert main(["search", "--model", str(model), "--text", "a", "--index", str(empty), str(folder / "night")]) == 2
    assert "is a folder" in capsys.readouterr().err
    # An index that cannot be written: the search still answers, and says the next run pays for it.
    blocked = folder / "notes.txt" / "index"
    code, ranked, err = _search(capsys, model, "--index", blocked, "--text", "a", folder / "night")
    assert code == 0 and len(ranked) == 100 and "warning: cannot write the index" in err[0]
    assert err[-1] == "index: 100 new, 0 removed, 0 reused"


def test_default_index_per_folder_respects_xdg(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    a, b = default_index_path(tmp_path / "x" / "outputs"), default_index_path(tmp_path / "y" / "outputs")
    assert a != b and a.parent == tmp_path / "xdg" / "clip_suite" / "index" and a.name.startswith("outputs-")
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # the XDG spec: ignore relative values
    assert user_cache_dir() == Path.home() / ".cache" or sys.platform in ("darwin", "win32")


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(ROOT / "tests")]))
    return env


def test_sigkill_mid_index_leaves_a_usable_index(vision_dir, folder, tmp_path, capsys):
    """Kill the indexing process at several moments (saving after every batch, so some kills land in a
    write): each time the index on disk is complete and valid, and the next run reuses all of it."""
    model = vision_dir / "clip_hf.safetensors"
    index = tmp_path / "killed.index"
    cmd = [sys.executable, "-m", "clip_suite", "search", "--model", str(model), "--text", "a",
           "--index", str(index), "--batch-size", "2", "--save-every", "0", str(folder)]
    kept = 0
    for delay in (0.0, 0.15):
        env, mark = marked_env(_env())
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if index.exists() and len(EmbeddingIndex.read(index)) > kept:
                break  # this run has saved some of its own work
            time.sleep(0.02)
        time.sleep(delay)
        assert proc.poll() is None, f"the run ended before it was killed: {proc.stderr.read().decode()[-500:]}"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stderr.close()
        if HAS_PROC:  # its image loader's workers (and multiprocessing's helper) end with it
            left = survivors(mark)
            assert not left, f"processes of the killed run are still alive: {left}"
        on_disk = EmbeddingIndex.read(index)  # raises if the kill left a partial file
        assert kept < len(on_disk) < 300
        kept = len(on_disk)
    code, ranked, err = _search(capsys, model, "--index", index, "--text", "a", folder)
    assert code == 0 and len(ranked) == 300
    assert err[-1] == f"index: {300 - kept} new, 0 removed, {kept} reused"
    assert not list(tmp_path.glob("killed.index.*.tmp")), "temp files of killed writers are cleaned up"


class _Terminal(io.StringIO):
    """A stderr that says it is a terminal (the progress bar is drawn only there)."""

    def isatty(self):
        return True


def test_progress_bars_on_a_terminal_only(vision_dir, folder, monkeypatch, capsys):
    model = vision_dir / "clip_hf.safetensors"
    night = folder / "night"
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["search", "--model", str(model), "--text", "a", "--top", "1", str(night)]) == 0
    assert main(["classify", "--model", str(model), "--labels", "a,b", "--out", "-", str(night)]) == 0
    drawn = terminal.getvalue()
    assert "\rindexing [" in drawn and "100/100" in drawn and "\rclassifying [" in drawn
    monkeypatch.undo()
    assert main(["search", "--model", str(model), "--text", "a", "--top", "1", str(night)]) == 0
    assert "indexing [" not in capsys.readouterr().err


def test_csv_cells_are_safe_in_every_command(vision_dir, tmp_path, monkeypatch, capsys):
    """search, duplicates and classify write their CSVs with score's cell rules: no cell opens as a formula
    in a spreadsheet (file names and labels starting with = or + get a leading quote)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    for i, name in enumerate(("=HYPERLINK(1).png", "+a.png", "plain.png")):
        _png(tmp_path / name, i)
    images = ["=HYPERLINK(1).png", "+a.png", "plain.png"]
    model = str(vision_dir / "clip_hf.safetensors")
    runs = {
        "search": ["--text", "a dog", "--index", "idx.safetensors"],
        "duplicates": ["--threshold", "-0.99", "--index", "idx.safetensors", "."],
        "classify": ["--labels", "=cmd(),+dog"],
    }
    for command, extra in runs.items():
        out = tmp_path / f"{command}.csv"
        argv = [command, "--model", model, *extra, "--out", str(out)] + ([] if command == "duplicates" else images)
        assert main(argv) == 0, command
        capsys.readouterr()
        cells = [c for row in csv.reader(out.open(newline="", encoding="utf-8")) for c in row]
        assert not [c for c in cells if c[:1] in ("=", "+", "@")], (command, cells)
        if command == "classify":
            assert "'=HYPERLINK(1).png" in cells and any(c.startswith("'=cmd()") or c == "'+dog" for c in cells)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file names are bytes")
def test_listings_go_on_past_a_name_that_is_not_utf8(vision_dir, tmp_path):
    """A file name with a Latin-1 byte (not UTF-8) is listed as its own bytes, and the listing goes on,
    on a strict UTF-8 stdout (what a UTF-8 locale gives)."""
    d = tmp_path / "imgs"
    d.mkdir()
    odd = os.fsdecode(b"caf\xe9.png")
    for i, name in enumerate((odd, "plain.png", "zz.png")):
        _png(d / name, i)
    env = dict(os.environ, PYTHONIOENCODING="utf-8", XDG_CACHE_HOME=str(tmp_path / "cache"))
    model = str(vision_dir / "clip_hf.safetensors")
    for command in (["search", "--text", "a dog", str(d)], ["duplicates", "--threshold", "-0.99", str(d)]):
        out = subprocess.run([sys.executable, "-m", "clip_suite", command[0], "--model", model, *command[1:]],
                             capture_output=True, env=env, timeout=300)
        assert out.returncode == 0, out.stderr.decode(errors="replace")[-2000:]
        assert b"caf\xe9.png" in out.stdout and b"plain.png" in out.stdout and b"zz.png" in out.stdout, out.stdout
