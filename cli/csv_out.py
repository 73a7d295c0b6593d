"""CSV output that every command writes the same way: safe to open in a spreadsheet, never stopped by a
character the output cannot encode, bounded per cell (issue 15's rules for the ``score`` CSV, for all)."""

from __future__ import annotations

import contextlib
import csv
import os
import sys
from dataclasses import dataclass


MAX_CELL_CHARS = 8192
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(text: str, encoding: str = "utf-8") -> str:
    """A CSV text cell that a spreadsheet shows as text and the output can encode.

    Cut to MAX_CELL_CHARS (saying how long it was); characters ``encoding`` cannot hold (lone surrogates)
    as backslash escapes; a leading = + - @ tab or CR (a formula to Excel/LibreOffice) behind a ``'``.
    """
    if len(text) > MAX_CELL_CHARS:
        text = text[:MAX_CELL_CHARS] + f" [... cut: {len(text):,} characters in all]"
    try:
        text.encode(encoding)
    except UnicodeEncodeError:
        text = text.encode(encoding, "backslashreplace").decode(encoding)
    except LookupError:  # an unknown encoding name on an odd stream: fall back to ASCII escapes
        text = text.encode("ascii", "backslashreplace").decode("ascii")
    if text.startswith(_FORMULA_STARTS):
        text = "'" + text
    return text


def display_path(path: str) -> str:
    """A path for display: undecodable file-name bytes (surrogate escapes) as \\xNN."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        return os.fsencode(path).decode("utf-8", "backslashreplace") if _is_fs_escaped(path) else path


def _is_fs_escaped(path: str) -> bool:
    try:
        os.fsencode(path)
        return True
    except UnicodeEncodeError:
        return False



@dataclass
class CsvOut:
    """An open CSV output: ``writer`` (csv.writer), ``stream`` (to flush), and ``cell(text)`` that makes a text
    cell safe for it (numbers formatted by the caller are written as they are)."""

    writer: object
    stream: object
    encoding: str

    def cell(self, text: str) -> str:
        return safe_cell(text, self.encoding)

    def path(self, path: str) -> str:
        """A file path as a safe cell (undecodable name bytes as \\xNN)."""
        return safe_cell(display_path(path), self.encoding)


@contextlib.contextmanager
def csv_output(out: str):
    """A :class:`CsvOut` on ``out`` ('-': standard output); backslashreplace: a lone surrogate (undecodable
    file-name bytes, "\\ud800" in metadata) is written as an escape instead of ending the run half-way."""
    stream = sys.stdout if out == "-" else open(out, "w", newline="", encoding="utf-8", errors="backslashreplace")
    try:
        yield CsvOut(csv.writer(stream), stream, getattr(stream, "encoding", None) or "utf-8")
    finally:
        if stream is not sys.stdout:
            stream.close()
