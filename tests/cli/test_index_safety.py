"""The index file of ``search`` and ``duplicates`` never costs the user a file, a hang or a traceback
(robustness round 3): ``--index`` naming something that is not ours is refused and left intact, pipes and
devices are refused without opening them, an index that cannot be written still lets the run print its
results, our own damaged index is rebuilt, long names work, and a model that differs anywhere gets its
own embeddings.
"""

from __future__ import annotations

import os
import socket
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clip_suite.cli import main
from clip_suite.clip_impl.scoring.search_index import FORMAT, VERSION, EmbeddingIndex
from helpers.bounded import HAS_PROC, describe, run_bounded
from helpers.vision_fixtures import v336_model, v_model, vg_model, vh_model, vision_dir  # noqa: F401


def _png(path: Path, seed: int) -> Path:
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture()
def imgs(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(6):
        _png(d / f"img_{i}.png", i)
    return d


def _snapshot(folder: Path) -> dict:
    return {p.name: (p.read_bytes() if p.is_file() and not p.is_symlink() else os.readlink(p) if p.is_symlink() else None)
            for p in folder.iterdir()}


def _victims(tmp_path: Path, model: Path, imgs: Path) -> list[Path]:
    """Files a user might name by mistake: a model, notes, an image being searched, a checkpoint, bytes of
    unknown kind, a safetensors file of another program, a link to notes."""
    d = tmp_path / "mine"
    d.mkdir()
    (d / "model.safetensors").write_bytes(model.read_bytes())
    (d / "notes.txt").write_text("my notes\n")
    with zipfile.ZipFile(d / "model.ckpt", "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    (d / "blob.bin").write_bytes(os.urandom(3000))
    (d / "short").write_bytes(b"abc")
    header = b'{"__metadata__":{"format":"other.tool","entries":"[]"}}'
    (d / "other.safetensors").write_bytes(len(header).to_bytes(8, "little") + header)
    (d / "link").symlink_to(d / "notes.txt")
    return [*sorted(d.iterdir()), imgs / "img_3.png"]


def test_index_never_replaces_a_file_that_is_not_ours(vision_dir, imgs, tmp_path, capsys):
    model = vision_dir / "clip_hf.safetensors"
    for victim in _victims(tmp_path, model, imgs):
        before, images_before = _snapshot(victim.parent), _snapshot(imgs)
        command = "duplicates" if victim.name == "notes.txt" else "search"
        query = [] if command == "duplicates" else ["--text", "a"]
        code = main([command, "--model", str(model), *query, "--index", str(victim), str(imgs)])
        err = capsys.readouterr().err
        assert code == 2, (victim, err)
        assert err.startswith(f"error: --index {victim}") and "is not a CLIP Suite image index" in err, err
        assert "left as it is" in err and "Traceback" not in err and len(err.splitlines()) == 1
        assert _snapshot(victim.parent) == before and _snapshot(imgs) == images_before, victim


@pytest.mark.skipif(not HAS_PROC or not hasattr(os, "mkfifo"), reason="needs /proc and FIFOs (Linux)")
def test_pipes_devices_and_sockets_are_refused_without_hanging(vision_dir, imgs, tmp_path):
    os.mkfifo(tmp_path / "fifo")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "sock"))
    try:
        code = """
            import sys
            from clip_suite.cli import main
            for target in sys.argv[3:]:
                print("exit", main(["search", "--model", sys.argv[1], "--text", "a", "--index", target, sys.argv[2]]))
        """
        out = run_bounded(code, timeout=60, max_rss_mb=1500,
                          args=[vision_dir / "clip_hf.safetensors", imgs, tmp_path / "fifo", tmp_path / "sock", os.devnull])
    finally:
        sock.close()
    assert out.ok and out.stdout.split() == ["exit", "2"] * 3, describe(out)
    for words in ("a named pipe (FIFO)", "a socket", "a character device"):
        assert words in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and sorted(os.listdir(tmp_path)) == ["fifo", "imgs", "sock"]


@pytest.mark.skipif(not HAS_PROC or sys.platform != "linux", reason="RLIMIT_FSIZE stands for a full disk (Linux)")
def test_an_index_that_cannot_be_written_still_prints_the_ranking(vision_dir, imgs, tmp_path, capsys):
    model, index = vision_dir / "clip_hf.safetensors", tmp_path / "idx"
    assert main(["search", "--model", str(model), "--text", "a", "--index", str(index), str(imgs)]) == 0
    capsys.readouterr()
    kept = index.read_bytes()
    for i in range(6, 30):  # the next index is larger than the limit: its write fails half way
        _png(imgs / f"img_{i}.png", i)
    code = """
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, like ENOSPC
        resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[3]), resource.RLIM_INFINITY))
        from clip_suite.cli import main
        sys.exit(main(["search", "--model", sys.argv[1], "--text", "a", "--index", sys.argv[2], "--save-every", "0",
                       "--batch-size", "4", sys.argv[4]]))
    """
    out = run_bounded(code, timeout=120, max_rss_mb=2500, args=[model, index, len(kept) + 512, imgs])
    assert out.ok, describe(out)
    assert len(out.stdout.splitlines()) == 30, "the ranking is printed"
    warnings = [line for line in out.stderr.splitlines() if line.startswith("warning: cannot write the index")]
    assert len(warnings) == 1 and str(index) in warnings[0] and "Traceback" not in out.stderr, out.stderr
    assert index.read_bytes() == kept and sorted(os.listdir(tmp_path)) == ["idx", "imgs"], "no temp left"


def _forge(path: Path, entries: str, shape=(6, 64), data: bytes | None = None) -> None:
    """An index of ours (the marker is there) with damaged metadata; ``data`` shorter than the shape says."""
    import json
    import zlib

    data = bytes(4 * shape[0] * shape[1]) if data is None else data
    meta = {"format": FORMAT, "version": VERSION, "fingerprint": "f", "entries": entries,
            "crc32": str(zlib.crc32(entries.encode(), zlib.crc32(data)))}
    header = json.dumps({"__metadata__": meta, "embeddings": {"dtype": "F32", "shape": list(shape),
                                                              "data_offsets": [0, 4 * shape[0] * shape[1]]}},
                        separators=(",", ":")).encode()
    path.write_bytes(len(header).to_bytes(8, "little") + header + data)


def test_our_own_damaged_index_is_rebuilt(vision_dir, imgs, tmp_path, capsys):
    model, index = vision_dir / "clip_hf.safetensors", tmp_path / "idx"
    for entries, shape, data in [("5", (6, 64), None), ("null", (6, 64), None), ("[" * 200_000, (6, 64), None),
                                 ('[["/x", 1, 2]]', (1, 7), None),  # a width the model does not make
                                 ('[["/x", 1, 2]]', (1, 10**9), bytes(28))]:  # a size the file does not hold
        _forge(index, entries, shape, data)
        code = main(["search", "--model", str(model), "--text", "a", "--index", str(index), str(imgs)])
        out = capsys.readouterr()
        assert code == 0 and len(out.out.splitlines()) == 6, (entries[:10], shape, out.err)
        assert out.err.startswith(f"index {index} ") and "rebuilding it" in out.err.splitlines()[0]
        assert out.err.splitlines()[-1] == "index: 6 new, 0 removed, 0 reused"
        assert len(EmbeddingIndex.read(index)) == 6


def test_a_long_index_name_is_kept(vision_dir, imgs, tmp_path, capsys):
    model, index = vision_dir / "clip_hf.safetensors", tmp_path / ("i" * 250)
    for expected in ("index: 6 new, 0 removed, 0 reused", "index: 0 new, 0 removed, 6 reused"):
        assert main(["search", "--model", str(model), "--text", "a", "--index", str(index), str(imgs)]) == 0
        err = capsys.readouterr().err
        assert err.strip().splitlines() == [expected], err


def test_a_model_that_differs_in_any_weight_gets_its_own_embeddings(vision_dir, imgs, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    model = vision_dir / "clip_hf.safetensors"
    state = load_file(str(model))
    state["vision_model.encoder.layers.0.mlp.fc1.weight"].view(-1)[1] += 4.0  # a weight sampling skipped
    save_file(state, str(tmp_path / "other.safetensors"))
    index, query = tmp_path / "idx", imgs / "img_2.png"
    for name in (model, tmp_path / "other.safetensors"):
        assert main(["search", "--model", str(name), "--image", str(query), "--index", str(index), str(imgs)]) == 0
    out = capsys.readouterr()
    assert "made with another model" in out.err
    first = out.out.splitlines()[6]  # the second run's best hit: the query itself
    assert first == f"1.0000  {query}", out.out


@pytest.mark.skipif(os.name != "posix", reason="HOME and the password database are POSIX")
def test_without_a_cache_folder_the_search_answers_and_keeps_no_index(vision_dir, imgs, tmp_path, monkeypatch, capsys):
    import pwd
    import types

    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", "")
    monkeypatch.setattr(pwd, "getpwuid", lambda uid: types.SimpleNamespace(pw_dir="/"))
    before = os.path.exists("/.cache/clip_suite")
    assert main(["search", "--model", str(vision_dir / "clip_hf.safetensors"), "--text", "a", str(imgs)]) == 0
    out = capsys.readouterr()
    assert len(out.out.splitlines()) == 6 and "keeps no index" in out.err and "--index" in out.err, out.err
    assert os.path.exists("/.cache/clip_suite") == before, "nothing written under /.cache"
