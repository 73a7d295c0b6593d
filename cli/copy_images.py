"""Copy chosen image files into a folder, never moving or deleting anything (``score --copy-to``).

- Files are copied byte for byte with their permission bits and timestamps: the PNG text chunks, EXIF and
  everything else inside the file stay as they were.
- An image found under a folder named on the command line keeps its path below that folder; a file
  named on the command line goes to the top of the target.
- A second run into the same folder copies nothing twice: a target that already holds the same bytes (same
  size, same content) counts as done. A different file of the same name is kept, and the copy gets ``_1``,
  ``_2``, ... (up to MAX_SUFFIX).
- The target may not be one of the source folders or inside one (a later run would score the copies).
- Complete or not at all: each copy is written to a temporary file in its folder, flushed to disk, then
  linked to its name, which must still be free (never replacing a file). On any failure (a full disk)
  the temporary file is removed and the run stops with the reason; no partial copy is left under a real
  name. Temporary files of killed runs (``.clip_suite_copy.PID.N.tmp``, their process gone) are removed
  when a later run copies into that folder.
- Nothing is written outside the real target folder: folders below it are opened one at a time without
  following symbolic links (``O_NOFOLLOW``, relative to the folder above), new files are created with
  ``O_EXCL``, and a name that is a symbolic link is never written through. A symbolic link where a copy's
  folder would be skips that image; one where its file name would be makes the copy take the next
  suffix. Each is said in a note on stderr.
"""

from __future__ import annotations

import errno
import itertools
import os
import stat
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..clip_impl.folders import writer_gone

MAX_SUFFIX = 10_000  # names tried for one image (name, name_1, ... name_9999)
MAX_NOTES = 20  # notes printed one by one, then a count
_CHUNK = 1 << 20
_TEMP_PREFIX = ".clip_suite_copy."
_TEMP_SUFFIX = ".tmp"
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_BINARY = getattr(os, "O_BINARY", 0)
# Folders held open and used as the base of every name (race-free: a folder swapped for a link later is
# not followed). Windows has no dir_fd: there, each name is checked with lstat and the real path compared.
_AT = (os.name == "posix" and {os.open, os.mkdir, os.stat, os.unlink, os.link}.issubset(os.supports_dir_fd)
       and hasattr(os, "fchmod") and os.utime in os.supports_fd)
_counter = itertools.count()


@dataclass
class CopyResult:
    copied: int = 0
    already_there: int = 0
    skipped: int = 0  # images not copied (a symbolic link in the way, a source gone)
    notes: list[str] = field(default_factory=list)


class _Skip(Exception):
    """This image is not copied, for the reason given (a note)."""


def check_target(target: str, sources: Sequence[str]) -> None:
    """ValueError when ``target`` is a file, or is (inside) one of the source folders."""
    if os.path.exists(target) and not os.path.isdir(target):
        raise ValueError(f"--copy-to {target} is a file; give a folder (it is created when missing)")
    real = os.path.realpath(target)
    for source in sources:
        if not os.path.isdir(source):
            continue
        if _inside(real, os.path.realpath(source)):
            raise ValueError(
                f"--copy-to {target} is inside the source folder {source}; a later run would score the copies "
                "again: give a folder outside the images being scored"
            )
    parent = os.path.dirname(os.path.abspath(target))
    if not os.path.isdir(parent):
        raise ValueError(f"--copy-to {target}: the folder {parent} does not exist")


def _inside(path: str, root: str) -> bool:
    try:
        return os.path.commonpath([path, root]) == root
    except ValueError:  # different drives (Windows)
        return False


def relative_target(path: str, sources: Sequence[str]) -> str:
    """Where ``path`` goes below the target: its path below the source folder it was found in, else its name."""
    real = os.path.realpath(path)
    for source in sources:
        if os.path.isdir(source):
            root = os.path.realpath(source)
            if real != root and _inside(real, root):
                return os.path.relpath(real, root)
    return os.path.basename(path)


def _parts(relative: str, path: str) -> list[str]:
    """The folder names and the file name of ``relative``; just the file's name if it is not a plain
    relative path (nothing may climb out of the target)."""
    parts = [p for p in relative.replace(os.sep, "/").split("/") if p not in ("", ".")]
    if not parts or ".." in parts or os.path.isabs(relative):
        parts = [os.path.basename(path) or "image"]
    return parts


def copy_files(paths: list[str], sources: Sequence[str], target: str, stream=None) -> CopyResult:
    """Copy each of ``paths`` into ``target`` (see the module docstring); returns the counts. Notes (images
    skipped, names taken by links) go to ``stream`` (stderr). Raises ValueError when a copy cannot be
    written (full disk, no permission), after removing its temporary file."""
    result = CopyResult()
    os.makedirs(target, exist_ok=True)
    root = _Folder.open_root(target)
    try:
        folders: dict[tuple[str, ...], _Folder] = {(): root}
        for path in paths:
            parts = _parts(relative_target(path, sources), path)
            try:
                folder = _folder(folders, parts[:-1], root)
                done = _copy_one(path, folder, parts[-1], result.notes)
            except _Skip as e:
                result.skipped += 1
                result.notes.append(f"not copied: {path}: {e}")
                continue
            if done:
                result.copied += 1
            else:
                result.already_there += 1
    finally:
        for folder in folders.values():
            folder.close()
    _report(result, len(paths), stream or sys.stderr)
    return result


def _report(result: CopyResult, total: int, stream) -> None:
    for note in result.notes[:MAX_NOTES]:
        print(f"--copy-to: {note}", file=stream)
    if len(result.notes) > MAX_NOTES:
        print(f"--copy-to: {len(result.notes) - MAX_NOTES} more notes like these", file=stream)
    if result.skipped:
        print(f"--copy-to: {result.skipped} of {total} images not copied (see the notes above)", file=stream)


def _folder(folders: dict, names: list[str], root: "_Folder") -> "_Folder":
    """The folder ``names`` below the target, created where missing, each step without following links."""
    key: tuple[str, ...] = ()
    folder = root
    for name in names:
        key += (name,)
        if key not in folders:
            folders[key] = folder.child(name)
        folder = folders[key]
    return folder


def _copy_one(path: str, folder: "_Folder", name: str, notes: list[str]) -> bool:
    """True when ``path`` was copied into ``folder`` as ``name`` (or the next free suffix), False when one of
    those names already holds the same bytes."""
    try:
        src = os.open(path, os.O_RDONLY | _BINARY)
    except OSError as e:
        raise _Skip(f"cannot read it ({e.strerror or e})") from e
    try:
        st = os.fstat(src)
        if not stat.S_ISREG(st.st_mode):
            raise _Skip("not a regular file")
        stem, ext = os.path.splitext(name)
        for n in range(MAX_SUFFIX):
            candidate = name if n == 0 else f"{stem}_{n}{ext}"
            while True:  # again when the name was taken between the look and the link
                there = folder.lstat(candidate)
                if there is not None or folder.write_new(src, st, candidate, path):
                    break
            if there is None:
                return True
            if stat.S_ISLNK(there.st_mode):
                notes.append(f"{folder.show(candidate)} is a symbolic link: not followed, the copy of {path} "
                             "takes the next free name")
            elif stat.S_ISREG(there.st_mode) and there.st_size == st.st_size and folder.same_bytes(src, candidate):
                return False
        raise _Skip(f"{MAX_SUFFIX} names like {folder.show(name)} are taken (MAX_SUFFIX)")
    finally:
        os.close(src)


def _same(src: int, other: int) -> bool:
    os.lseek(src, 0, os.SEEK_SET)
    while True:
        a, b = _read(src), _read(other)
        if a != b:
            return False
        if not a:
            return True


def _read(fd: int) -> bytes:
    """The next _CHUNK bytes of ``fd`` (fewer only at the end: a read may return less than asked)."""
    parts, size = [], 0
    while size < _CHUNK:
        part = os.read(fd, _CHUNK - size)
        if not part:
            break
        parts.append(part)
        size += len(part)
    return b"".join(parts)


class _Folder:
    """A folder of the target, held open (POSIX) or by its real path (elsewhere)."""

    def __init__(self, path: str, fd: int | None, root: str):
        self.path, self.fd, self.root = path, fd, root
        self.cleaned = False

    @classmethod
    def open_root(cls, target: str) -> "_Folder":
        real = os.path.realpath(target)  # the target named by the user may itself be a link: that is its choice
        fd = os.open(real, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)) if _AT else None
        return cls(target, fd, real)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def show(self, name: str) -> str:
        return os.path.join(self.path, name)

    def _at(self, name: str) -> tuple[str, dict]:
        return (name, {"dir_fd": self.fd}) if self.fd is not None else (os.path.join(self._real(), name), {})

    def _real(self) -> str:
        real = os.path.realpath(self.path)
        if not _inside(real, self.root):
            raise _Skip(f"{self.path} leads outside the target {self.root}")
        return real

    def lstat(self, name: str):
        where, kw = self._at(name)
        try:
            return os.stat(where, follow_symlinks=False, **kw)
        except FileNotFoundError:
            return None

    def child(self, name: str) -> "_Folder":
        """The subfolder ``name``, created when missing; _Skip when it is a link or not a folder."""
        where, kw = self._at(name)
        try:
            os.mkdir(where, **kw)
        except FileExistsError:
            pass
        except OSError as e:
            raise ValueError(f"--copy-to: cannot create the folder {self.show(name)} ({e.strerror or e}); fix the "
                             "target's permissions or give another folder") from e
        there = os.stat(where, follow_symlinks=False, **kw)
        if stat.S_ISLNK(there.st_mode):
            raise _Skip(f"{self.show(name)} is a symbolic link inside the target; it is not followed")
        if not stat.S_ISDIR(there.st_mode):
            raise _Skip(f"{self.show(name)} is not a folder")
        if self.fd is None:
            return _Folder(self.show(name), None, self.root)
        try:
            fd = os.open(name, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _NOFOLLOW, dir_fd=self.fd)
        except OSError as e:  # swapped for a link since the look (ELOOP), or gone
            raise _Skip(f"{self.show(name)} cannot be opened as a folder without following links ({e.strerror})") from e
        return _Folder(self.show(name), fd, self.root)

    def same_bytes(self, src: int, name: str) -> bool:
        where, kw = self._at(name)
        try:
            fd = os.open(where, os.O_RDONLY | _NOFOLLOW | _BINARY, **kw)
        except OSError:
            return False
        try:
            return stat.S_ISREG(os.fstat(fd).st_mode) and _same(src, fd)
        finally:
            os.close(fd)

    def write_new(self, src: int, st: os.stat_result, name: str, path: str) -> bool:
        """Copy ``src`` to ``name`` through a temporary file; False when ``name`` was taken meanwhile."""
        self._remove_stale_temps()
        tmp = f"{_TEMP_PREFIX}{os.getpid()}.{next(_counter)}{_TEMP_SUFFIX}"
        tmp_at, kw = self._at(tmp)
        try:
            fd = os.open(tmp_at, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _BINARY, 0o600, **kw)
            try:
                os.lseek(src, 0, os.SEEK_SET)
                while chunk := os.read(src, _CHUNK):
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view):]
                os.fsync(fd)
                _copy_stat(fd, st)
            finally:
                os.close(fd)
            if self.fd is None:  # no fd-based calls here: set them on the closed file
                os.chmod(tmp_at, stat.S_IMODE(st.st_mode))
                os.utime(tmp_at, ns=(st.st_atime_ns, st.st_mtime_ns))
            return self._link(tmp, name)
        except OSError as e:
            if e.errno == errno.ENAMETOOLONG:
                raise _Skip(f"the name {self.show(name)} is too long for the target's file system") from e
            raise ValueError(
                f"--copy-to: cannot copy {path} to {self.show(name)} ({e.strerror or e}); nothing partial was left "
                "there. Free space or fix the folder's permissions and run again: copies already made are "
                "recognised and not made twice"
            ) from e
        finally:
            try:
                os.unlink(tmp_at, **kw)
            except OSError:
                pass  # never made, or already renamed to its name

    def _link(self, tmp: str, name: str) -> bool:
        """Give the complete temporary file its name, never replacing a file; False when it was taken."""
        tmp_at, name_at = self._at(tmp)[0], self._at(name)[0]
        both = {"src_dir_fd": self.fd, "dst_dir_fd": self.fd} if self.fd is not None else {}
        try:
            if self.fd is not None:
                os.link(tmp_at, name_at, follow_symlinks=False, **both)
            else:
                os.link(tmp_at, name_at)
        except FileExistsError:
            return False
        except (OSError, NotImplementedError) as e:
            if isinstance(e, OSError) and e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV,
                                                          errno.ENOSYS, errno.EMLINK):
                raise
            # No hard links here (FAT, exFAT, some network shares): rename, after looking again.
            if self.lstat(name) is not None:
                return False
            try:
                os.rename(tmp_at, name_at, **both)
            except FileExistsError:  # Windows never replaces: taken meanwhile
                return False
        _fsync_dir(self.fd)
        return True

    def _remove_stale_temps(self) -> None:
        """Remove temporary files of killed runs in this folder (once per folder and run)."""
        if self.cleaned:
            return
        self.cleaned = True
        try:
            entries = list(os.scandir(self.fd if self.fd is not None else self._real()))
        except OSError:
            return
        for entry in entries:
            pid = entry.name[len(_TEMP_PREFIX):].split(".", 1)[0]
            if not (entry.name.startswith(_TEMP_PREFIX) and entry.name.endswith(_TEMP_SUFFIX) and pid.isdigit()):
                continue
            if int(pid) == os.getpid() or not entry.is_file(follow_symlinks=False) or not writer_gone(int(pid), entry):
                continue
            where, kw = self._at(entry.name)
            try:
                os.unlink(where, **kw)
            except OSError:
                pass  # removed by another run meanwhile, or not ours to remove: harmless


def _copy_stat(fd: int, st: os.stat_result) -> None:
    """The source's permission bits and times on the copy (as shutil.copy2 does), on the open file (POSIX)."""
    if _AT:
        os.fchmod(fd, stat.S_IMODE(st.st_mode))
        os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))


def _fsync_dir(fd: int | None) -> None:
    """Make the new name durable where the platform allows (POSIX); best effort."""
    if fd is None:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a folder; the link itself is complete
