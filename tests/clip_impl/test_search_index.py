"""The embedding index file: round trip, what makes a file unusable, stale temp files, the model fingerprint."""

import os
import types
import zlib

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from clip_suite.clip_impl.weights.loading import load_clip
from clip_suite.clip_impl.scoring.search_index import FORMAT, VERSION, EmbeddingIndex, NotAnIndexError, model_fingerprint
from helpers.vision_fixtures import v336_model, v_model, vg_model, vh_model, vision_dir  # noqa: F401


class _Stat:
    """What the index reads of os.stat: size and mtime in ns."""

    def __init__(self, size, mtime):
        self.st_size, self.st_mtime_ns = size, mtime


def test_round_trip_and_lookup(tmp_path):
    index = EmbeddingIndex("f" * 32)
    rows = torch.randn(3, 8)
    for i, name in enumerate(["/a/x.png", "/a/ü ñ.png", "/b/y.jpg"]):
        index.put(name, _Stat(100 + i, 10**18 + i), rows[i])
    path = tmp_path / "sub" / "idx.safetensors"
    index.save(path)
    back = EmbeddingIndex.read(path)
    assert back.fingerprint == "f" * 32 and list(back.entries) == list(index.entries)
    assert torch.equal(back.lookup("/a/ü ñ.png", _Stat(101, 10**18 + 1)), rows[1])
    assert back.lookup("/a/x.png", _Stat(100, 10**18 + 5)) is None, "another mtime is another file"
    assert back.lookup("/a/x.png", _Stat(99, 10**18)) is None, "another size is another file"
    assert not list(path.parent.glob("*.tmp"))
    EmbeddingIndex("e" * 32).save(path)  # an empty index is a valid index
    assert len(EmbeddingIndex.read(path)) == 0


def _write(path, entries: str, emb=None, crc=None, **meta):
    emb = torch.zeros(2, 4) if emb is None else emb
    crc = zlib.crc32(entries.encode(), zlib.crc32(emb.numpy().tobytes())) if crc is None else crc
    base = {"format": FORMAT, "version": VERSION, "fingerprint": "x", "entries": entries, "crc32": str(crc)}
    save_file({"embeddings": emb}, str(path), metadata={**base, **meta})


@pytest.mark.parametrize(
    "entries,meta,message",
    [
        ('[["/a", 1, 2], ["/b", 3, 4]]', {"format": "something else"}, "is not a CLIP Suite image index"),
        ('[["/a", 1, 2], ["/b", 3, 4]]', {"version": "0"}, "is version 0"),
        ('[["/a", 1, 2]]', {}, "holds (2, 4) embeddings for 1 entries"),
        ('[["/a", 1], ["/b", 3, 4]]', {}, "has broken metadata"),
        ('not json', {}, "has broken metadata"),
        ('[["/a", 1, 2], ["/b", 3, 4]]', {"crc32": "12"}, "fails its checksum"),
    ],
)
def test_unusable_files_say_why(tmp_path, entries, meta, message):
    path = tmp_path / "idx"
    _write(path, entries, **meta)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        EmbeddingIndex.read(path)
    if "format" in meta:  # not one of ours (by its content): refused, never replaced
        before = path.read_bytes()
        with pytest.raises(NotAnIndexError, match="is not a CLIP Suite image index"):
            EmbeddingIndex.open(path, "x")
        with pytest.raises(NotAnIndexError):
            EmbeddingIndex("x").save(path)
        assert path.read_bytes() == before
        return
    index, problem = EmbeddingIndex.open(path, "x")
    assert len(index) == 0 and problem.startswith(f"index {path} ") and problem.endswith("rebuilding it")


def test_other_model_and_missing_file(tmp_path):
    path = tmp_path / "idx"
    _write(path, '[["/a", 1, 2], ["/b", 3, 4]]')
    index, problem = EmbeddingIndex.open(path, "x")
    assert len(index) == 2 and problem is None
    index, problem = EmbeddingIndex.open(path, "y")
    assert len(index) == 0 and "made with another model" in problem
    index, problem = EmbeddingIndex.open(tmp_path / "none", "x")
    assert len(index) == 0 and problem is None, "a first run says nothing about a missing index"


def test_stale_temp_files_of_dead_writers_are_removed(tmp_path):
    path = tmp_path / "idx"
    dead = tmp_path / "idx.999999999.tmp"  # no process has that id
    mine = tmp_path / f"idx.{os.getpid()}.tmp"
    other = tmp_path / "other.999999999.tmp"
    for f in (dead, mine, other):
        f.write_bytes(b"partial")
    EmbeddingIndex.open(path, "x")
    assert not dead.exists() and mine.exists() and other.exists()


def test_fingerprint_follows_the_vision_weights(vision_dir):
    hf = model_fingerprint(load_clip(vision_dir / "clip_hf.safetensors"))
    assert hf == model_fingerprint(load_clip(vision_dir / "clip_openclip.safetensors")), "same weights, other names"
    assert hf == model_fingerprint(load_clip([vision_dir / "clip_l.safetensors", vision_dir / "clip_vision_l.safetensors"]))
    assert hf != model_fingerprint(load_clip(vision_dir / "clip_hf_336.safetensors")), "another vision tower"
    assert hf != model_fingerprint(load_clip(vision_dir / "clip_hf.safetensors", precision="bf16")), "another precision"
    assert len(hf) == 32 and int(hf, 16) >= 0


# ------------------------------------------------------------------ hostile index files (robustness round 3)
def _raw(path, meta=None, shape=(2, 4), data=None, header=None, length=None):
    """An index-like file written byte by byte: our marker first, then whatever the case forges."""
    import json

    base = {"format": FORMAT, "version": VERSION, "fingerprint": "x", "entries": '[["/a", 1, 2], ["/b", 3, 4]]'}
    meta = {**base, **(meta or {})}
    data = bytes(4 * shape[0] * shape[1]) if data is None else data
    if "crc32" not in meta:
        meta["crc32"] = str(zlib.crc32(str(meta["entries"]).encode(), zlib.crc32(data)))
    if header is None:
        header = json.dumps({"__metadata__": meta, "embeddings": {"dtype": "F32", "shape": list(shape),
                                                                  "data_offsets": [0, len(data)]}}, separators=(",", ":"))
    raw = header.encode()
    path.write_bytes((len(raw) if length is None else length).to_bytes(8, "little") + raw + data)


_OURS = '{"__metadata__":{"format":"' + FORMAT + '","version":"' + VERSION + '","fingerprint":"x"'
_DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize("case", [
    dict(meta={"entries": "5"}), dict(meta={"entries": "null"}), dict(meta={"entries": '"x"'}),
    dict(meta={"entries": "{}"}), dict(meta={"entries": _DEEP}), dict(meta={"entries": "[" * 50_000}),
    dict(meta={"entries": '[["/a", true, 2], ["/b", 3, 4]]'}), dict(meta={"entries": '[["/a", 1.5, 2], ["/b", 3, 4]]'}),
    dict(meta={"entries": '[["/a", -1, 2], ["/b", 3, 4]]'}), dict(meta={"entries": '[["/a", 1, 2], ["/a", 3, 4]]'}),
    dict(meta={"entries": '[["/a", 1' + "0" * 5000 + ', 2], ["/b", 3, 4]]'}),
    dict(meta={"entries": '[[5, 1, 2], ["/b", 3, 4]]'}), dict(meta={"crc32": "abc"}), dict(meta={"crc32": "-1"}),
    dict(meta={"fingerprint": ""}), dict(header=_OURS + ',"entries":5,"crc32":"1"},"embeddings":{}}'),
    dict(header=_OURS + '},"x":' + _DEEP + "}"), dict(header=_OURS + "}," + '"e":' * 1000 + "1}"),
    dict(shape=(2, 4), data=bytes(24)),  # a forged width: the header says 4, the data holds 3
    dict(shape=(2, 10**6), data=bytes(32)), dict(shape=(10**12, 10**6), data=bytes(32)),
    dict(shape=(2, -4), data=bytes(32)), dict(length=2**62), dict(length=10**6),
    dict(data=np.full((2, 4), np.nan, np.float32).tobytes()),
    dict(shape=(2, 8)),  # valid, but 8 wide where the model makes 4
    dict(header=_OURS + ',"entries":"[]","crc32":"0"},"embeddings":{"dtype":"F16","shape":[0,0],"data_offsets":[0,0]}}'),
])
def test_damaged_own_index_is_rebuilt_never_raises(tmp_path, case):
    path = tmp_path / "idx"
    _raw(path, **case)
    index, problem = EmbeddingIndex.open(path, "x", width=4)
    assert len(index) == 0 and problem.startswith(f"index {path} ") and problem.endswith("rebuilding it"), problem
    assert len(problem) < 400, "the note is one short line, not the file echoed"
    index.save(path)  # ours (by its marker): it may be replaced
    assert len(EmbeddingIndex.read(path)) == 0


def test_files_written_here_read_with_safetensors_too(tmp_path):
    from safetensors import safe_open

    index = EmbeddingIndex("f" * 32)
    index.put("/a.png", _Stat(1, 2), torch.arange(4.0))
    index.save(tmp_path / "idx")
    with safe_open(str(tmp_path / "idx"), framework="pt") as f:
        assert f.metadata()["format"] == FORMAT and torch.equal(f.get_tensor("embeddings"), torch.arange(4.0)[None])


def test_fingerprint_sees_every_weight(vision_dir, tmp_path):
    """A weight the old sampled fingerprint skipped (every 16th of an MLP matrix) changes the fingerprint."""
    from safetensors.torch import load_file

    base = vision_dir / "clip_hf.safetensors"
    for key in ("vision_model.encoder.layers.1.mlp.fc1.weight", "visual_projection.weight"):
        state = load_file(str(base))
        flat = state[key].view(-1)
        flat[1] += 0.5
        save_file(state, str(tmp_path / "other.safetensors"))
        assert model_fingerprint(load_clip(base)) != model_fingerprint(load_clip(tmp_path / "other.safetensors")), key


@pytest.mark.skipif(os.name != "posix", reason="HOME and the password database are POSIX")
def test_cache_dir_without_home(tmp_path, monkeypatch):
    import pwd

    from clip_suite.clip_impl.scoring.search_index import user_cache_dir

    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", "")
    home = tmp_path / "account"
    home.mkdir()
    monkeypatch.setattr(pwd, "getpwuid", lambda uid: types.SimpleNamespace(pw_dir=str(home)))
    assert user_cache_dir() == home / ".cache", "an empty HOME is no home: the account's home directory is used"
    monkeypatch.setattr(pwd, "getpwuid", lambda uid: types.SimpleNamespace(pw_dir="/"))
    with pytest.raises(ValueError, match="XDG_CACHE_HOME"):
        user_cache_dir()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert user_cache_dir() == tmp_path / "xdg"


def test_default_index_names_stay_short(tmp_path, monkeypatch):
    from clip_suite.clip_impl.scoring.search_index import default_index_path

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    a, b = (default_index_path(tmp_path / ("\U0001d400" * 60 + tail)) for tail in ("a", "b"))  # 4-byte letters
    assert a != b and max(len(os.fsencode(p.name)) for p in (a, b)) <= 80
    assert default_index_path(tmp_path / "outputs").name.startswith("outputs-"), "short names are unchanged"


def test_long_index_names_and_temp_names(tmp_path):
    """A 250-byte index name is saved (its temp files get a short hashed name); a link put where a temp file
    would go is never written through; files that only look like temp files of another name are kept."""
    index = EmbeddingIndex("x")
    index.put("/a.png", _Stat(1, 2), torch.ones(4))
    long_name = tmp_path / ("x" * 250)
    index.save(long_name)
    assert len(EmbeddingIndex.read(long_name)) == 1 and os.listdir(tmp_path) == [long_name.name]

    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (tmp_path / f"idx.{os.getpid()}.tmp").symlink_to(victim)
    index.save(tmp_path / "idx")
    assert victim.read_text() == "keep me" and len(EmbeddingIndex.read(tmp_path / "idx")) == 1

    lookalike = tmp_path / "ab.idx.999999999.tmp"  # a glob "a[b].idx.*.tmp" would match it
    lookalike.write_text("not a temp file of a[b].idx")
    EmbeddingIndex.open(tmp_path / "a[b].idx", "x")
    assert lookalike.exists()


@pytest.mark.skipif(not hasattr(__import__("socket"), "AF_UNIX"), reason="needs Unix sockets")
def test_refused_paths(tmp_path):
    """Folders, links to nothing and sockets are refused by the library too (never replaced)."""
    import socket

    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere" / "idx")
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(tmp_path / "sock"))
        for name, message in [("dangling", "does not exist"), ("sock", "a socket"), (".", "a folder")]:
            with pytest.raises(NotAnIndexError, match=message):
                EmbeddingIndex.open(tmp_path / name, "x")
            with pytest.raises(NotAnIndexError, match=message):
                EmbeddingIndex("x").save(tmp_path / name)
    finally:
        sock.close()
    assert not (tmp_path / "nowhere").exists()


def test_entry_limit_is_kept_on_write_and_read(tmp_path, monkeypatch):
    from clip_suite.clip_impl.scoring import index_file

    index = EmbeddingIndex("x")
    for i in range(3):
        index.put(f"/{i}.png", _Stat(1, 2), torch.ones(4))
    monkeypatch.setattr(index_file, "MAX_ENTRIES", 2)
    with pytest.raises(ValueError, match="more than one index file keeps"):
        index.save(tmp_path / "idx")
    assert os.listdir(tmp_path) == [], "nothing written, no temp left"
    monkeypatch.setattr(index_file, "MAX_ENTRIES", 3)
    index.save(tmp_path / "idx")
    monkeypatch.setattr(index_file, "MAX_ENTRIES", 2)
    back, problem = EmbeddingIndex.open(tmp_path / "idx", "x")
    assert len(back) == 0 and "over 2" in problem and problem.endswith("rebuilding it")
