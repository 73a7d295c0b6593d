"""Walking model and embedding folders that may hold symlinks (loops included).

``os.walk(top, followlinks=True)`` enters a directory once per path that leads to it: a folder holding
``a -> .`` and ``b -> .`` is walked 2, 4, 8, ... times over, down to the filesystem's path-length limit
(exponential). :func:`walk_once` follows symlinks too, but enters each real directory (device, inode)
once, by the first path met in sorted order, so loops and diamonds cost one visit.
"""

from __future__ import annotations

import os
from collections.abc import Iterator


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:  # a broken link, or removed while we looked
        return None
    return st.st_dev, st.st_ino


def walk_once(top: str | os.PathLike) -> Iterator[tuple[str, list[str], list[str]]]:
    """``os.walk(top, followlinks=True)``, entering each real directory once (top-down, sorted).

    Yields (dirpath, dirnames, filenames) as os.walk does; ``dirnames`` is sorted and holds only the
    subfolders still to be entered (a link to a folder already entered or scheduled is left out), and
    may be pruned further by the caller, as with os.walk. Unreadable folders are skipped silently.
    """
    first = _identity(os.fspath(top))
    if first is None:
        return
    scheduled = {first}
    for root, dirs, files in os.walk(top, followlinks=True):
        kept = []
        for name in sorted(dirs):
            key = _identity(os.path.join(root, name))
            if key is not None and key not in scheduled:
                scheduled.add(key)
                kept.append(name)
        dirs[:] = kept
        yield root, dirs, files


STALE_TEMP_SECONDS = 24 * 3600  # where a temp file's writer cannot be checked (Windows), its age decides


def writer_gone(pid: int, path: str | os.PathLike) -> bool:
    """Whether the process ``pid`` that named the temp file ``path`` after itself has ended, so the file is
    left over from a killed run and may be removed. Outside POSIX (where ``os.kill(pid, 0)`` would end the
    process) the file's age decides: older than :data:`STALE_TEMP_SECONDS`. The file itself is never followed
    through a link."""
    if os.name != "posix":
        import time

        try:
            return time.time() - os.stat(path, follow_symlinks=False).st_mtime > STALE_TEMP_SECONDS
        except OSError:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # a running process of another user
    return False
