"""The embedding index file: round trip, what makes a file unusable, stale temp files, the model fingerprint."""

import os
import zlib

import pytest
import torch
from safetensors.torch import save_file

from clip_suite.clip_impl.weights.loading import load_clip
from clip_suite.clip_impl.scoring.search_index import FORMAT, VERSION, EmbeddingIndex, model_fingerprint
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
