"""An on-disk index of image embeddings, so that searching a folder again embeds only what changed.

Each entry is keyed by the image's absolute path, with its size and modification time (ns) when it was
embedded; the whole index carries the fingerprint of the model that made the embeddings
(:func:`model_fingerprint`). Refreshing an index against the images found now (:func:`refresh`) embeds
new or changed files, drops deleted ones and reuses the rest.

File format: one safetensors file, tensor ``embeddings`` (N, P) float32, and metadata ``format``,
``version``, ``fingerprint``, ``entries`` (a JSON list of ``[path, size, mtime_ns]``, row order) and
``crc32`` (over the embedding bytes and the entries). A file that is missing, truncated, corrupt, of
another format version or from another model is not used: :meth:`EmbeddingIndex.open` returns an empty
index and says why, and the next save replaces it.

Writes are atomic: the index goes to a temporary file in the same folder, is flushed to disk, then
``os.replace``s the old one, so a process killed at any moment leaves either the previous index or the
new one, never a partial file. While many images are embedded the index is saved every ``save_every``
seconds, so an interrupted run keeps most of its work.

The default index of a folder lives under the user cache directory (``$XDG_CACHE_HOME``, else
``~/.cache``; ``%LOCALAPPDATA%`` on Windows, ``~/Library/Caches`` on macOS), in ``clip_suite/index/``,
never inside the image folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from .file_embedding import embed_image_files
from ..model import ClipModel
from .similarity import scoring_towers

FORMAT = "clip_suite.image_index"
VERSION = "1"  # bump when the preprocessing or the file layout changes: old indexes are rebuilt
_SAMPLES = 4096  # weights sampled per tensor for the fingerprint
STALE_TEMP_SECONDS = 24 * 3600  # where a temp file's writer cannot be checked (Windows), its age decides


def user_cache_dir() -> Path:
    """The user's cache directory: $XDG_CACHE_HOME or ~/.cache (Linux), %LOCALAPPDATA% (Windows),
    ~/Library/Caches (macOS)."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):  # the XDG spec says a relative value is to be ignored
        return Path(xdg)
    if os.name == "nt" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"])
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches"
    return Path.home() / ".cache"


def default_index_path(folder: str | os.PathLike) -> Path:
    """The default index file of an image folder: under the user cache directory, named after the folder
    and a hash of its absolute path (two folders of the same name get two files)."""
    absolute = os.path.abspath(folder)
    digest = hashlib.sha256(absolute.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in os.path.basename(absolute) or "root")[:40]
    return user_cache_dir() / "clip_suite" / "index" / f"{name}-{digest}.safetensors"


def model_fingerprint(model: ClipModel) -> str:
    """A hex digest that changes whenever the image embeddings would: the vision tower's shape, compute
    dtype and (a sample of) every weight, plus the index version. Stable across processes and file
    layouts (the same weights in HF or OpenCLIP names give the same fingerprint)."""
    _, vision = scoring_towers(model)
    h = hashlib.sha256(f"{FORMAT}/{VERSION}".encode())
    cfg = vision.config
    h.update(repr((cfg.width, cfg.layers, cfg.heads, cfg.mlp_width, cfg.patch, cfg.image_size, cfg.activation,
                   cfg.projection_dim, str(vision.compute_dtype))).encode())
    for name, tensor in sorted(vision.state_dict().items()):
        h.update(f"{name}{tuple(tensor.shape)}".encode())
        h.update(_sample(tensor.detach()).tobytes())
    return h.hexdigest()[:32]


def _sample(tensor: torch.Tensor):
    """Up to _SAMPLES evenly spaced values of ``tensor`` as a float32 numpy array. On the CPU through numpy
    (no torch op, so no thread-pool wake-ups: ~150 tiny torch ops cost a second on a busy machine)."""
    import numpy as np

    n = tensor.numel()
    step = max(1, n // _SAMPLES)
    if tensor.device.type != "cpu":
        return tensor.reshape(-1)[::step][:_SAMPLES].float().cpu().numpy()
    if tensor.dtype == torch.bfloat16:  # numpy has no bfloat16: widen the bits by hand
        bits = tensor.view(torch.int16).numpy().reshape(-1)[::step][:_SAMPLES].astype(np.uint16)
        return (bits.astype(np.uint32) << 16).view(np.float32)
    return tensor.numpy().reshape(-1)[::step][:_SAMPLES].astype(np.float32)


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
    def open(cls, path: str | os.PathLike, fingerprint: str) -> tuple["EmbeddingIndex", str | None]:
        """(the index stored at ``path``, None), or (an empty index, why the file is not used): a missing
        file says nothing; truncated, corrupt, other-version and other-model files say so."""
        path = Path(path)
        remove_stale_temps(path)
        if not path.exists():
            return cls(fingerprint), None
        try:
            index = cls.read(path)
        except ValueError as e:
            return cls(fingerprint), f"index {path} {e}: rebuilding it"
        if index.fingerprint != fingerprint:
            return cls(fingerprint), f"index {path} was made with another model (or precision): rebuilding it"
        return index, None

    @classmethod
    def read(cls, path: str | os.PathLike) -> "EmbeddingIndex":
        """Read an index file; ValueError (saying what is wrong) for anything but a complete, valid index."""
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                if meta.get("format") != FORMAT:
                    raise ValueError("is not a CLIP Suite image index")
                if meta.get("version") != VERSION:
                    raise ValueError(f"is version {meta.get('version')}, this CLIP Suite writes version {VERSION}")
                emb = f.get_tensor("embeddings")
        except (SafetensorError, OSError, RuntimeError) as e:  # truncated files fail to parse or to map
            raise ValueError(f"is truncated or corrupt ({e})") from e
        try:
            rows = json.loads(meta["entries"])
            crc = int(meta["crc32"])
            fingerprint = meta["fingerprint"]
        except (KeyError, ValueError, TypeError) as e:
            raise ValueError(f"has broken metadata ({e})") from e
        if emb.dtype != torch.float32 or emb.ndim != 2 or emb.shape[0] != len(rows):
            raise ValueError(f"holds {tuple(emb.shape)} embeddings for {len(rows)} entries")
        if _crc(emb, meta["entries"]) != crc:
            raise ValueError("fails its checksum (corrupt)")
        try:
            entries = {str(p): Entry(int(size), int(mtime), row) for (p, size, mtime), row in zip(rows, emb)}
        except (ValueError, TypeError) as e:  # a list of something else than [path, size, mtime]
            raise ValueError(f"has broken metadata ({e})") from e
        return cls(fingerprint, entries)

    def save(self, path: str | os.PathLike) -> None:
        """Write the index to ``path`` atomically (temp file in the same folder, fsync, os.replace)."""
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        items = list(self.entries.items())
        if items:
            emb = torch.stack([e.embedding.float().cpu() for _, e in items]).contiguous()
        else:
            emb = torch.zeros(0, 0)
        # ASCII JSON: a file name that is not UTF-8 (lone surrogates from os.fsdecode) is kept as a \u
        # escape that reads back as the same name; safetensors metadata must be valid UTF-8.
        rows = json.dumps([[p, e.size, e.mtime_ns] for p, e in items])
        meta = {"format": FORMAT, "version": VERSION, "fingerprint": self.fingerprint, "entries": rows,
                "crc32": str(_crc(emb, rows))}
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        try:
            save_file({"embeddings": emb}, str(tmp), metadata=meta)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        _fsync_dir(path.parent)

    def lookup(self, path: str, st: os.stat_result) -> torch.Tensor | None:
        """The stored embedding of ``path`` if the file still has the size and mtime it was embedded with."""
        entry = self.entries.get(path)
        if entry is None or entry.size != st.st_size or entry.mtime_ns != st.st_mtime_ns:
            return None
        return entry.embedding

    def put(self, path: str, st: os.stat_result, embedding: torch.Tensor) -> None:
        self.entries[path] = Entry(st.st_size, st.st_mtime_ns, embedding.detach().float().cpu())


def _crc(emb: torch.Tensor, rows: str) -> int:
    return zlib.crc32(rows.encode("utf-8", "surrogatepass"), zlib.crc32(emb.numpy().tobytes()))


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable where the platform allows (POSIX); best effort."""
    if os.name != "posix":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a directory; the rename itself is still atomic
    finally:
        os.close(fd)


def remove_stale_temps(path: Path) -> None:
    """Delete temp files of ``path`` left by writers that were killed (their process no longer runs)."""
    if not path.parent.is_dir():
        return
    for tmp in path.parent.glob(f"{path.name}.*.tmp"):
        pid = tmp.name[len(path.name) + 1 : -len(".tmp")]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        if _writer_gone(int(pid), tmp):
            try:
                tmp.unlink()
            except OSError:
                pass  # removed by another run meanwhile, or not ours to remove: harmless


def _writer_gone(pid: int, tmp: Path) -> bool:
    if os.name != "posix":  # os.kill(pid, 0) would terminate the process on Windows: go by age
        try:
            return time.time() - tmp.stat().st_mtime > STALE_TEMP_SECONDS
        except OSError:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # a running process of another user
    return False


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
