"""An on-disk index of image embeddings, so that searching a folder again embeds only what changed.

Each entry is keyed by the image's absolute path, with its size and modification time (ns) when it was
embedded; the whole index carries the fingerprint of the model that made the embeddings
(:func:`model_fingerprint`: every weight of the vision tower and its projection). Refreshing an index
against the images found now (:func:`refresh`) embeds new or changed files, drops deleted ones and reuses
the rest.

The file (``index_file``): one safetensors file, tensor ``embeddings`` (N, P) float32, metadata
``format``, ``version``, ``fingerprint``, ``entries`` and ``crc32``. A path that names anything but a
missing file, an empty file or an index of ours (told by content, not by name) is refused
(:class:`NotAnIndexError`) and never written. One of ours that is truncated, corrupt, of another version,
from another model or of another width is not used: :meth:`EmbeddingIndex.open` returns an empty index
and says why, and the next save replaces it. Writes are atomic (temp file in the same folder, fsync,
``os.replace``), so a process killed at any moment leaves the previous index or the new one. While many
images are embedded the index is saved every ``save_every`` seconds, so an interrupted run keeps most of
its work.

The default index of a folder lives under the user cache directory (``$XDG_CACHE_HOME``, else
``$HOME/.cache``, else the account's home from the password database; ``%LOCALAPPDATA%`` on Windows,
``~/Library/Caches`` on macOS), in ``clip_suite/index/``, never inside the image folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import weakref
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .file_embedding import embed_image_files
from ..model import ClipModel
from .index_file import (  # the format's names stay importable from here
    FORMAT, STALE_TEMP_SECONDS, VERSION, NotAnIndexError, inspect_target, parse_entries, read_index_file,
    remove_stale_temps, write_index_file,
)
from .similarity import scoring_towers

NAME_BYTES = 40  # of the folder's name in a default index's file name (the rest is a hash)
_CHUNK = 1 << 24  # values hashed at once: bounds the fp32 copy of a half-precision tensor to 64 MB
_FINGERPRINTS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # vision tower -> (weights key, digest)


def user_cache_dir() -> Path:
    """The user's cache directory: $XDG_CACHE_HOME or ~/.cache (Linux), %LOCALAPPDATA% (Windows),
    ~/Library/Caches (macOS). ValueError when there is none (no usable HOME nor home directory)."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):  # the XDG spec says a relative value is to be ignored
        return Path(xdg)
    if os.name == "nt":
        return Path(os.environ["LOCALAPPDATA"]) if os.environ.get("LOCALAPPDATA") else Path.home() / ".cache"
    home = _home()
    return home / "Library" / "Caches" if sys.platform == "darwin" else home / ".cache"


def _home() -> Path:
    """$HOME when it is an absolute path; else (empty, unset or relative: Python would give ``/`` or the
    working folder) the account's home directory when it exists and is not ``/``; else ValueError."""
    home = os.environ.get("HOME", "")
    if os.path.isabs(home):
        return Path(home)
    try:
        import pwd

        home = pwd.getpwuid(os.getuid()).pw_dir
    except (ImportError, KeyError, OSError):
        home = ""
    if os.path.isabs(home) and home.strip("/") and os.path.isdir(home):
        return Path(home)
    raise ValueError("no cache folder for the default index: HOME is empty or relative and XDG_CACHE_HOME is "
                     "not set; set XDG_CACHE_HOME (or HOME), or give the index file's path")


def default_index_path(folder: str | os.PathLike) -> Path:
    """The default index file of an image folder: under the user cache directory, named after the folder
    (at most NAME_BYTES bytes of it) and a hash of its absolute path (two folders of the same name get two
    files); the name stays far below any file system's name limit. ValueError when there is no cache
    directory (:func:`user_cache_dir`)."""
    absolute = os.path.abspath(folder)
    digest = hashlib.sha256(absolute.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in os.path.basename(absolute) or "root")[:40]
    name = name.encode("utf-8", "surrogatepass")[:NAME_BYTES].decode("utf-8", "ignore")
    return user_cache_dir() / "clip_suite" / "index" / f"{name}-{digest}.safetensors"


def model_fingerprint(model: ClipModel) -> str:
    """A hex digest that changes whenever the image embeddings would: the vision tower's shape, compute
    dtype and every byte of every weight and buffer of the tower and its projection, plus the index
    version. Half-precision weights are hashed as the float32 values they widen to, so a tower gives the
    same digest before and after its deferred fp32 copies, and the same weights in HF or OpenCLIP names
    (or fp16 and fp32 files) give the same digest. Computed once per loaded tower and set of weights
    (a sha256 over the weights: about 1 s per GB of float32 on one core)."""
    _, vision = scoring_towers(model)
    tensors = sorted([*vision.named_parameters(), *vision.named_buffers()], key=lambda item: item[0])
    key = tuple((name, t.data_ptr(), t._version, t.dtype, tuple(t.shape), str(t.device)) for name, t in tensors)
    known = _FINGERPRINTS.get(vision)
    if known is not None and known[0] == key:
        return known[1]
    h = hashlib.sha256(f"{FORMAT}/{VERSION}/all-weights".encode())
    cfg = vision.config
    h.update(repr((cfg.width, cfg.layers, cfg.heads, cfg.mlp_width, cfg.patch, cfg.image_size, cfg.activation,
                   cfg.projection_dim, str(vision.compute_dtype))).encode())
    for name, tensor in tensors:
        _hash_tensor(h, name, tensor.detach())
    digest = h.hexdigest()[:32]
    _FINGERPRINTS[vision] = (key, digest)
    return digest


def _hash_tensor(h, name: str, tensor: torch.Tensor) -> None:
    """Feed ``tensor``'s name, shape and values (half precision widened to float32) to ``h``, a chunk at a
    time. On the CPU through numpy where it can (no torch op, so no thread-pool wake-ups)."""
    widen = tensor.dtype.is_floating_point and tensor.element_size() < 4
    h.update(f"{name}{tuple(tensor.shape)}{torch.float32 if widen else tensor.dtype}".encode())
    flat = tensor.reshape(-1)
    for start in range(0, flat.numel(), _CHUNK):
        part = flat[start : start + _CHUNK]
        if part.device.type == "cpu" and part.dtype == torch.float16:
            values = part.numpy().astype(np.float32)
        elif part.device.type == "cpu" and part.dtype == torch.bfloat16:  # numpy has no bfloat16
            values = (part.view(torch.int16).numpy().astype(np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            part = part.float() if widen else part
            values = part.cpu().contiguous().view(torch.uint8).numpy()
        h.update(np.ascontiguousarray(values).reshape(-1).view(np.uint8))


@dataclass
class Entry:
    """An indexed image: its size and mtime (ns) when embedded, and its embedding (P,) float32."""

    size: int
    mtime_ns: int
    embedding: torch.Tensor


class EmbeddingIndex:
    """Image embeddings keyed by absolute path (see the module docstring)."""

    def __init__(self, fingerprint: str, entries: dict[str, Entry] | None = None):
        self.fingerprint = fingerprint
        self.entries: dict[str, Entry] = dict(entries or {})

    def __len__(self) -> int:
        return len(self.entries)

    @classmethod
    def open(
        cls, path: str | os.PathLike, fingerprint: str, width: int | None = None
    ) -> tuple["EmbeddingIndex", str | None]:
        """(the index stored at ``path``, None), or (an empty index, why the file is not used): a missing
        file says nothing; an empty, truncated, corrupt, other-version, other-model or (``width`` given)
        other-width index says so. NotAnIndexError when ``path`` holds something that is not an index of
        ours (it must not be replaced); OSError when it cannot be read."""
        path = Path(path)
        real, state = inspect_target(path)
        remove_stale_temps(real)
        if state == "missing":
            return cls(fingerprint), None
        if state == "empty":
            return cls(fingerprint), f"index {path} is truncated or corrupt (an empty file): rebuilding it"
        try:
            index = cls.read(real, width)
        except NotAnIndexError:
            raise
        except ValueError as e:
            return cls(fingerprint), f"index {path} {e}: rebuilding it"
        if index.fingerprint != fingerprint:
            return cls(fingerprint), f"index {path} was made with another model (or precision): rebuilding it"
        return index, None

    @classmethod
    def read(cls, path: str | os.PathLike, width: int | None = None) -> "EmbeddingIndex":
        """Read an index file; ValueError (saying what is wrong) for anything but a complete, valid index
        (of embeddings ``width`` wide when given)."""
        meta, emb = read_index_file(path)
        crc, fingerprint, text = meta.get("crc32"), meta.get("fingerprint"), meta.get("entries")
        if text is None:
            raise ValueError("has broken metadata (no entries)")
        if not (isinstance(crc, str) and crc.isdigit() and len(crc) <= 10):
            raise ValueError(f"has broken metadata (crc32 {str(crc)[:12]!r} is not a checksum)")
        if not (isinstance(fingerprint, str) and 0 < len(fingerprint) <= 128 and fingerprint.isprintable()):
            raise ValueError("has broken metadata (fingerprint)")
        rows = parse_entries(text)
        if emb.shape[0] != len(rows) or (rows and emb.shape[1] == 0):
            raise ValueError(f"holds {tuple(emb.shape)} embeddings for {len(rows)} entries")
        if _crc(emb, text) != int(crc):
            raise ValueError("fails its checksum (corrupt)")
        if rows and width is not None and emb.shape[1] != width:
            raise ValueError(f"holds embeddings of width {emb.shape[1]}, this model makes {width}")
        if not np.isfinite(emb).all():
            raise ValueError("holds embeddings that are not finite numbers (corrupt)")
        table = torch.from_numpy(emb)
        return cls(fingerprint, {p: Entry(size, mtime, table[i]) for i, (p, size, mtime) in enumerate(rows)})

    def save(self, path: str | os.PathLike) -> None:
        """Write the index to ``path`` atomically (temp file in the same folder, fsync, os.replace).
        NotAnIndexError (nothing written) when ``path`` holds something that is not an index of ours;
        OSError when it cannot be written; ValueError past MAX_ENTRIES images."""
        items = list(self.entries.items())
        if items:
            emb = torch.stack([e.embedding.float().cpu() for _, e in items]).numpy()
        else:
            emb = np.zeros((0, 0), np.float32)
        # ASCII JSON: a file name that is not UTF-8 (lone surrogates from os.fsdecode) is kept as a \u
        # escape that reads back as the same name; safetensors metadata must be valid UTF-8.
        rows = json.dumps([[p, e.size, e.mtime_ns] for p, e in items])
        meta = {"format": FORMAT, "version": VERSION, "fingerprint": self.fingerprint, "entries": rows,
                "crc32": str(_crc(emb, rows))}
        write_index_file(path, emb, meta)

    def lookup(self, path: str, st: os.stat_result) -> torch.Tensor | None:
        """The stored embedding of ``path`` if the file still has the size and mtime it was embedded with."""
        entry = self.entries.get(path)
        if entry is None or entry.size != st.st_size or entry.mtime_ns != st.st_mtime_ns:
            return None
        return entry.embedding

    def put(self, path: str, st: os.stat_result, embedding: torch.Tensor) -> None:
        self.entries[path] = Entry(st.st_size, st.st_mtime_ns, embedding.detach().float().cpu())


def _crc(emb: np.ndarray, rows: str) -> int:
    data = np.ascontiguousarray(emb, dtype="<f4")
    return zlib.crc32(rows.encode("utf-8", "surrogatepass"), zlib.crc32(data.reshape(-1).view(np.uint8)))


@dataclass
class Refresh:
    """What :func:`refresh` did: counts, per-path embeddings of the images asked for, and failures."""

    new: int = 0
    removed: int = 0
    reused: int = 0
    embeddings: dict[str, torch.Tensor] = field(default_factory=dict)  # absolute path -> (P,)
    failed: dict[str, str] = field(default_factory=dict)  # absolute path -> reason
    changed: bool = False  # whether the index differs from what was read (then save it)

    def summary(self) -> str:
        """``index: N new, M removed, K reused``."""
        return summary_line(self.new, self.removed, self.reused)


def summary_line(new: int, removed: int, reused: int) -> str:
    """The one line that says what an index update did: ``index: N new, M removed, K reused``."""
    return f"index: {new} new, {removed} removed, {reused} reused"


def refresh(
    index: EmbeddingIndex,
    model: ClipModel,
    paths: list[str],
    in_scope: Callable[[str], bool],
    save: Callable[[], None],
    batch_size: int = 8,
    save_every: float = 30.0,
    progress: Callable[[int], None] | None = None,
) -> Refresh:
    """Bring ``index`` up to date with the images ``paths`` (absolute) and return their embeddings.

    New or changed files are embedded (``batch_size`` at a time); entries not among ``paths`` are dropped
    when ``in_scope(path)`` (under a folder searched now) or the file no longer exists. ``save()`` is called
    every ``save_every`` seconds while embedding (the caller saves at the end when ``changed``);
    ``progress(n)`` after each batch of ``n`` files.
    """
    out = Refresh()
    wanted = set(paths)
    stale = [p for p in index.entries if p not in wanted and (in_scope(p) or not os.path.exists(p))]
    for p in stale:
        del index.entries[p]
    out.removed = len(stale)
    out.changed = bool(stale)
    todo, stats = [], {}
    for p in paths:
        try:
            stats[p] = os.stat(p)  # before reading: a file changed while it is read is embedded again next time
        except OSError as e:
            out.failed[p] = f"cannot read the file ({e.strerror or e})"
            out.changed |= index.entries.pop(p, None) is not None
            continue
        found = index.lookup(p, stats[p])
        if found is None:
            todo.append(p)
        else:
            out.embeddings[p] = found
            out.reused += 1
    if progress is not None and (out.reused or out.failed):
        progress(out.reused + len(out.failed))
    last_save = time.monotonic()
    for batch in embed_image_files(model, todo, batch_size):
        for item in batch:
            if item.embedding is None:
                out.failed[item.path] = item.error
                out.changed |= index.entries.pop(item.path, None) is not None
            else:
                index.put(item.path, stats[item.path], item.embedding)
                out.embeddings[item.path] = item.embedding
                out.new += 1
                out.changed = True
        if progress is not None:
            progress(len(batch))
        if time.monotonic() - last_save >= save_every:
            save()
            last_save = time.monotonic()
    return out
