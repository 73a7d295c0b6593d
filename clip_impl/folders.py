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
