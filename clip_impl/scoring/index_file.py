"""The search index on disk: telling our files from the user's, reading one within bounds, writing one atomically.

Format: a safetensors file with one tensor ``embeddings`` (N, P) float32 and metadata ``format``
(:data:`FORMAT`, written first, so even a truncated file is recognised), ``version``, ``fingerprint``,
``entries`` (a JSON list of ``[path, size, mtime_ns]``, row order) and ``crc32`` (over the embedding bytes
and the entries). The header is written here (not by ``safetensors``), so every write error is an OSError
and the key order is fixed; ``safetensors`` reads the files and older indexes read here.

Whose file it is goes by content, never by name (:func:`inspect_target`): a path that does not exist or an
empty file may become an index; a file whose header carries the format marker is ours and may be
replaced when it is stale or damaged; anything else (a model, notes, an image, a pipe, a device) raises
:class:`NotAnIndexError` and is never opened for writing. A pipe or device is refused from ``os.stat``,
before it is opened (opening a FIFO waits for a writer forever).

Reading is linear and bounded: the header may hold at most :data:`MAX_HEADER_BYTES`, the file at most
:data:`MAX_ENTRIES` rows of at most :data:`MAX_WIDTH` values, JSON is refused past a small nesting depth
before it is parsed, and every size read from the header is checked against the file's real size before
memory is allocated from it. Writes go to a temp file in the same folder (created exclusively, never
through a link), are flushed and fsynced, then ``os.replace`` the old file; the temp file is removed on
any failure.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import stat
from pathlib import Path

import numpy as np

from ..folders import STALE_TEMP_SECONDS, writer_gone

FORMAT = "clip_suite.image_index"
VERSION = "1"  # bump when the preprocessing or the file layout changes: old indexes are rebuilt
MAX_HEADER_BYTES = 256 * 2**20  # about 2 million entries of 100-character paths
MAX_ENTRIES = 2_000_000  # images one index file keeps
MAX_WIDTH = 16384  # embedding size (bigG: 1280)
MAX_PATH_CHARS = 32768
_PREFIX = b'{"__metadata__":{"format":"' + FORMAT.encode() + b'"'  # how this writer starts every header
_MARKER = b'"format":"' + FORMAT.encode() + b'"'  # where an older writer put the keys in another order
_SAFETENSORS_START = b'{"__metadata__":{'
_LONG_NAME = 120  # bytes: a longer index name gets a short hashed name for its temp files
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_PAIR = re.compile(r"\[\]|\{\}")
_INT64 = 2**63


class NotAnIndexError(ValueError):
    """The path holds something that is not a CLIP Suite index (or is not a regular file): left as it is."""


def inspect_target(path: str | os.PathLike) -> tuple[Path, str]:
    """(the path to read and replace, what is there: ``"missing"``, ``"empty"`` or ``"ours"``).

    A symbolic link is followed to its file. NotAnIndexError for anything that must not be replaced: a
    file that is not a CLIP Suite index (by its content), a folder, pipe, device or socket, a dangling
    link. OSError when the file cannot be read (then nobody can tell whose it is: it is not replaced).
    A path that cannot exist (a file as a folder, a name over the length limit) counts as missing: writing
    it then fails with the reason.
    """
    path = Path(path)
    try:
        link = stat.S_ISLNK(os.lstat(path).st_mode)
    except OSError as e:
        if _cannot_exist(e):
            return path, "missing"
        raise
    shown = str(path)
    if link:
        real = Path(os.path.realpath(path))
        if not os.path.lexists(real) or not os.path.exists(path):
            raise NotAnIndexError(f"{path} is a symbolic link to {real}, which does not exist: give the index "
                                  "file's real path")
        path, shown = real, f"{path} (a link to {real})"
    fd, size = _open_regular(path, shown)
    with os.fdopen(fd, "rb") as f:
        if size == 0:
            return path, "empty"
        if _is_ours(f, size):
            return path, "ours"
        f.seek(0)
        what = _what_it_is(f.read(16))
    raise NotAnIndexError(f"{shown} is not a CLIP Suite image index ({what}): it is left as it is; give the "
                          "index a new file name, or the path of an index file")


def read_index_file(path: str | os.PathLike):
    """(metadata dict, embeddings (N, P) float32 numpy array) of a valid index file; ValueError that says
    what is wrong otherwise (NotAnIndexError when it is not one of ours)."""
    fd, size = _open_regular(Path(path))
    with os.fdopen(fd, "rb") as f:
        if size < 8:
            raise ValueError(f"is truncated or corrupt ({size} bytes)")
        n = int.from_bytes(f.read(8), "little")
        if n > MAX_HEADER_BYTES:
            raise ValueError(f"is truncated or corrupt (a header of {n} bytes, more than {MAX_HEADER_BYTES})")
        if 8 + n > size:
            raise ValueError(f"is truncated or corrupt (a header of {n} bytes in a file of {size})")
        header = _parse_header(f.read(n))
        meta = header.get("__metadata__")
        if not isinstance(meta, dict):
            raise ValueError("is not a CLIP Suite image index")
        if meta.get("format") == FORMAT and not all(isinstance(v, str) for v in meta.values()):
            raise ValueError("has broken metadata (values that are not text)")
        if meta.get("format") != FORMAT:
            raise ValueError("is not a CLIP Suite image index")
        if meta.get("version") != VERSION:
            raise ValueError(f"is version {str(meta.get('version'))[:20]}, this CLIP Suite writes version {VERSION}")
        rows, width = _tensor_shape(header)
        if 8 + n + rows * width * 4 != size:
            raise ValueError(f"is truncated or corrupt ({size} bytes, the header says {8 + n + rows * width * 4})")
        data = bytearray(rows * width * 4)
        if f.readinto(data) != len(data):
            raise ValueError("is truncated or corrupt (it ended while read)")
    return meta, np.frombuffer(data, dtype="<f4").reshape(rows, width)


def parse_entries(text: str) -> list[tuple[str, int, int]]:
    """The ``entries`` metadata as (path, size, mtime_ns) tuples; ValueError ("has broken metadata ...")
    for anything but a list of distinct ``[path, size, mtime_ns]``."""
    try:
        items = _bounded_json(text, 2)
    except ValueError as e:
        raise ValueError(f"has broken metadata (entries: {e})") from e
    if not isinstance(items, list):
        raise ValueError(f"has broken metadata (entries is {type(items).__name__}, not a list)")
    out, seen = [], set()
    for i, item in enumerate(items):
        if not (isinstance(item, list) and len(item) == 3 and isinstance(item[0], str)
                and 0 < len(item[0]) <= MAX_PATH_CHARS and "\x00" not in item[0]
                and all(type(v) is int and -_INT64 <= v < _INT64 for v in item[1:]) and item[1] >= 0):
            raise ValueError(f"has broken metadata (entry {i} is not [path, size, mtime_ns])")
        if item[0] in seen:
            raise ValueError(f"has broken metadata (entry {i} repeats a path)")
        seen.add(item[0])
        out.append((item[0], item[1], item[2]))
    return out


def write_index_file(path: str | os.PathLike, embeddings: np.ndarray, meta: dict[str, str]) -> None:
    """Write an index atomically: temp file beside ``path``, fsync, ``os.replace``, temp removed on failure.

    ``meta`` starts with ``format``. NotAnIndexError (nothing written) when ``path`` holds something else
    than an index of ours; OSError when it cannot be written.
    """
    target, _ = inspect_target(path)
    emb = np.ascontiguousarray(embeddings, dtype="<f4")
    too_many = f"more than one index file keeps ({MAX_ENTRIES} images, {MAX_HEADER_BYTES >> 20} MiB of names)"
    if emb.shape[0] > MAX_ENTRIES:
        raise ValueError(f"{emb.shape[0]} images are {too_many}; give each folder its own index file")
    header = {"__metadata__": meta, "embeddings": {"dtype": "F32", "shape": list(emb.shape),
                                                   "data_offsets": [0, emb.nbytes]}}
    head = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    head += b" " * (-len(head) % 8)  # safetensors aligns the data to 8 bytes
    if len(head) > MAX_HEADER_BYTES:
        raise ValueError(f"the names of {emb.shape[0]} images are {too_many}; give each folder its own index file")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(target)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(len(head).to_bytes(8, "little"))
            f.write(head)
            f.write(emb.reshape(-1).view(np.uint8))
            f.flush()
            os.fsync(f.fileno())
        inspect_target(target)  # still missing, empty or ours (nothing else was put there meanwhile)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(target.parent)


def remove_stale_temps(path: str | os.PathLike) -> None:
    """Delete temp files of ``path`` left by writers that were killed (their process no longer runs)."""
    path = Path(path)
    stem = _temp_stem(path.name) + "."
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return
    for entry in entries:
        name = entry.name
        if not (name.startswith(stem) and name.endswith(".tmp")):
            continue
        pid = name[len(stem) : -len(".tmp")].split(".")[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        with contextlib.suppress(OSError):  # removed by another run meanwhile, or not ours: harmless
            if entry.is_file(follow_symlinks=False) and writer_gone(int(pid), entry.path):
                os.unlink(entry.path)


def _cannot_exist(e: OSError) -> bool:
    return isinstance(e, (FileNotFoundError, NotADirectoryError)) or e.errno == errno.ENAMETOOLONG


def _open_regular(path: Path, shown: str = "") -> tuple[int, int]:
    """A read-only fd of ``path`` and its size. NotAnIndexError (naming it ``shown``) for anything but a
    regular file, checked with ``os.stat`` before opening (a FIFO waits for a writer on open, a device may
    act on it) and again on the open fd (O_NONBLOCK: a file swapped for a FIFO in between cannot block)."""
    shown = shown or str(path)
    kind = _kind(os.stat(path).st_mode)
    if kind:
        raise NotAnIndexError(f"{shown} is {kind}, not an index file: give the path of a regular file "
                              "(a name that does not exist yet creates one)")
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        if _kind(st.st_mode):
            raise NotAnIndexError(f"{shown} is {_kind(st.st_mode)}, not an index file: give the path of a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd, st.st_size


def _kind(mode: int) -> str:
    """'' for a regular file, else what it is, for messages."""
    if stat.S_ISREG(mode):
        return ""
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def _is_ours(f, size: int) -> bool:
    """Whether the header carries our format marker (read only as far as needed, at most the header)."""
    head = f.read(8 + len(_PREFIX))
    if head[8:] == _PREFIX:
        return True
    if len(head) < 8 + len(_SAFETENSORS_START) or not head[8:].startswith(_SAFETENSORS_START):
        return False
    n = int.from_bytes(head[:8], "little")
    f.seek(8)
    return _MARKER in f.read(min(n, size - 8, MAX_HEADER_BYTES))


def _what_it_is(start: bytes) -> str:
    """A few words on what a file that is not an index seems to be, for the refusal."""
    if start[8:10] == b"{\"":
        return "a safetensors file without the index marker: a model?"
    for magic, name in ((b"\x89PNG", "a PNG image"), (b"\xff\xd8", "a JPEG image"), (b"RIFF", "a RIFF file (WEBP?)"),
                        (b"GIF8", "a GIF image"), (b"PK", "a zip file (a PyTorch checkpoint?)"), (b"\x80", "a pickle")):
        if start.startswith(magic):
            return name
    try:
        start.decode("utf-8")
        return "text"
    except UnicodeDecodeError:
        return "no index header"


def _bounded_json(text: str, max_depth: int):
    """``json.loads(text)`` after checking, in linear time, that it nests at most ``max_depth`` levels
    (the C parser recurses once per level). ValueError when it is deeper or not JSON."""
    # Outside strings: drop escaped backslashes and quotes, then every other piece between quotes.
    outside = "".join(text.replace("\\\\", "").replace('\\"', "").split('"')[::2])
    brackets = _NOT_BRACKET.sub("", outside)
    for _ in range(max_depth):
        if not brackets:
            break
        brackets = _PAIR.sub("", brackets)  # one level of innermost pairs a pass
    if brackets:
        raise ValueError(f"nested deeper than {max_depth} levels, or unbalanced")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as e:
        raise ValueError(f"not JSON: {str(e)[:100]}") from None


def _parse_header(raw: bytes) -> dict:
    try:
        header = _bounded_json(raw.decode("utf-8"), 3)
    except (UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"is truncated or corrupt (its header is {str(e)[:120]})") from None
    if not isinstance(header, dict):
        raise ValueError("is truncated or corrupt (its header is not a JSON object)")
    return header


def _tensor_shape(header: dict) -> tuple[int, int]:
    """(N, P) of the one tensor ``embeddings``, checked: float32, 2-D, within bounds, contiguous offsets."""
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    info = tensors.get("embeddings")
    if set(tensors) != {"embeddings"} or not isinstance(info, dict):
        raise ValueError(f"is truncated or corrupt (tensors {sorted(tensors)[:5]}, not one 'embeddings')")
    shape, offsets = info.get("shape"), info.get("data_offsets")
    if (info.get("dtype") != "F32" or not isinstance(shape, list) or len(shape) != 2
            or not all(type(v) is int and v >= 0 for v in shape)):
        raise ValueError(f"is truncated or corrupt (embeddings {str(info.get('dtype'))[:10]} {str(shape)[:40]}, "
                         "not float32 rows)")
    rows, width = shape
    if rows > MAX_ENTRIES or width > MAX_WIDTH:
        raise ValueError(f"is truncated or corrupt ({rows} x {width} embeddings, over {MAX_ENTRIES} x {MAX_WIDTH})")
    if offsets != [0, rows * width * 4]:
        raise ValueError(f"is truncated or corrupt (data offsets {str(offsets)[:40]} for {rows} x {width} float32)")
    return rows, width


def _temp_stem(name: str) -> str:
    """The start of the temp files' names: the index's name, or a short hashed one for a long name (the
    temp suffix must not take it past the file system's name limit)."""
    raw = os.fsencode(name)
    if len(raw) <= _LONG_NAME:
        return name
    digest = hashlib.sha256(raw).hexdigest()[:16]
    return raw[:40].decode("utf-8", "ignore") + "-" + digest


def _create_temp(target: Path) -> tuple[int, str]:
    """A new temp file beside ``target``, created exclusively (an existing file or link is never opened)."""
    stem = os.path.join(target.parent, _temp_stem(target.name))
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    flags |= getattr(os, "O_BINARY", 0)
    for k in range(100):
        tmp = f"{stem}.{os.getpid()}{f'.{k}' if k else ''}.tmp"
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temp file name", stem)


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
