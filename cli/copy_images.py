"""Copy chosen image files into a folder, never moving or deleting anything (``score --copy-to``).

- Files are copied byte for byte with their timestamps (``shutil.copy2``): the PNG text chunks, EXIF and
  everything else inside the file stay as they were.
- An image found under a folder named on the command line keeps its path below that folder; a file
  named on the command line goes to the top of the target.
- A second run into the same folder copies nothing twice: a target that already holds the same bytes
  counts as done. A different file of the same name is kept, and the copy gets ``_1``, ``_2``, ...
- The target may not be one of the source folders or inside one (a later run would score the copies).
"""

from __future__ import annotations

import filecmp
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass
class CopyResult:
    copied: int = 0
    already_there: int = 0


def check_target(target: str, sources: Sequence[str]) -> None:
    """ValueError when ``target`` is a file, or is (inside) one of the source folders."""
    if os.path.exists(target) and not os.path.isdir(target):
        raise ValueError(f"--copy-to {target} is a file; give a folder (it is created when missing)")
    real = os.path.realpath(target)
    for source in sources:
        if not os.path.isdir(source):
            continue
        root = os.path.realpath(source)
        if real == root or real.startswith(root.rstrip(os.sep) + os.sep):
            raise ValueError(
                f"--copy-to {target} is inside the source folder {source}; a later run would score the copies "
                "again: give a folder outside the images being scored"
            )
    parent = os.path.dirname(os.path.abspath(target))
    if not os.path.isdir(parent):
        raise ValueError(f"--copy-to {target}: the folder {parent} does not exist")


def relative_target(path: str, sources: Sequence[str]) -> str:
    """Where ``path`` goes below the target: its path below the source folder it was found in, else its name."""
    real = os.path.realpath(path)
    for source in sources:
        if os.path.isdir(source):
            root = os.path.realpath(source).rstrip(os.sep) + os.sep
            if real.startswith(root):
                return os.path.relpath(real, root)
    return os.path.basename(path)


def copy_files(paths: list[str], sources: Sequence[str], target: str) -> CopyResult:
    """Copy each of ``paths`` into ``target`` (see the module docstring); returns the counts."""
    result = CopyResult()
    os.makedirs(target, exist_ok=True)
    for path in paths:
        dest = os.path.join(target, relative_target(path, sources))
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        stem, ext = os.path.splitext(dest)
        n = 0
        while True:
            candidate = dest if n == 0 else f"{stem}_{n}{ext}"
            if not os.path.exists(candidate):
                shutil.copy2(path, candidate)
                result.copied += 1
                break
            if os.path.isfile(candidate) and filecmp.cmp(path, candidate, shallow=False):
                result.already_there += 1
                break
            n += 1
    return result
