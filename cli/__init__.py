"""Command line: ``python -m clip_suite encode|tokens|score|classify|search|duplicates ...`` (the console script ``clip-suite`` too).

Each subcommand is a module of this package with ``add_arguments(parser)`` (its docstring is the
subcommand's help) and ``run(args) -> exit code``; :data:`SUBCOMMANDS` is the one fixed table of them.
Bad input ends with exit code 2 and one line on stderr that says what was wrong and what to do.
The CLI calls ``clip_impl``; nothing in ``clip_impl`` imports it.
"""

from __future__ import annotations

import argparse
import codecs
import io
import logging
import sys

from . import classify, duplicates, encode, score, search, tokens

SUBCOMMANDS = {
    "encode": encode, "tokens": tokens, "score": score,
    "classify": classify, "search": search, "duplicates": duplicates,
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand of :data:`SUBCOMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="python -m clip_suite",
        description="CLIP text encoding, image scoring, zero-shot labels, image search and de-duplication",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module in SUBCOMMANDS.items():
        module.add_arguments(sub.add_parser(name, help=module.add_arguments.__doc__))
    return parser


def keep_undecodable_names_printable() -> None:
    """File names are bytes on POSIX, and one that is not valid UTF-8 reaches Python as lone surrogates,
    which a strict stdout refuses, ending a listing (``search``, ``duplicates``) at that name. Such names
    are written back as their own bytes on a UTF-8 stdout (so ``xargs`` gets the real name) and escaped on
    any other encoding. stderr already escapes."""
    stream = sys.stdout
    if not isinstance(stream, io.TextIOWrapper) or stream.errors != "strict":
        return
    utf8 = codecs.lookup(stream.encoding).name == "utf-8"
    stream.reconfigure(errors="surrogateescape" if utf8 else "backslashreplace")


def main(argv=None) -> int:
    """Entry point; returns the exit code (2 on bad input)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    keep_undecodable_names_printable()
    args = build_parser().parse_args(argv)
    try:
        return SUBCOMMANDS[args.command].run(args)
    except (ValueError, OSError) as e:  # ModelFileError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2
