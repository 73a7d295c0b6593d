"""What the image commands share: the folder rules and a progress bar.

Folders are searched recursively for .png/.jpg/.jpeg/.webp (other files are skipped); files named on the
command line are read whatever their suffix.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence

from ..clip_impl.images import IMAGE_SUFFIXES


def collect_images(paths: Sequence[str]) -> list[str]:
    """Files named, and images found under folders (sorted); a missing path stays, to get an error row."""
    out = []
    for given in paths:
        if not os.path.isdir(given):
            out.append(given)
            continue
        for root, dirs, files in os.walk(given):
            dirs.sort()
            out += [os.path.join(root, f) for f in sorted(files) if f.lower().endswith(IMAGE_SUFFIXES)]
    return out


class Progress:
    """A one-line progress bar on stderr, drawn only when stderr is a terminal."""

    def __init__(self, total: int, stream=None, label: str = "scoring"):
        self.total, self.done, self.label = total, 0, label
        self.stream = stream or sys.stderr
        self.enabled = total > 0 and self.stream.isatty()

    def advance(self, n: int) -> None:
        self.done += n
        if self.enabled:
            width = max(10, min(40, shutil.get_terminal_size().columns - 30))
            filled = width * self.done // self.total
            self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total}")
            self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()
