"""Small helpers that several test files use: ``assert_close``, ``pinned_host``, ``spy_on_reads``,
``BAD_REQUESTS`` and ``load_benchmark``."""

from __future__ import annotations

import contextlib
import json

from clip_suite.clip_impl.weights import files as weight_files
from clip_suite.nodes import host
from clip_suite.nodes.hosting.tokens_route import MAX_BODY_BYTES, MAX_TEXT_CHARS


@contextlib.contextmanager
def pinned_host(models_root):
    """The standalone host over ``models_root`` for the block (even if ComfyUI is importable), then the
    previous host again."""
    previous = host.set_host(host.StandaloneHost(models_root))
    try:
        yield host.get_host()
    finally:
        host.set_host(previous)


def spy_on_reads(monkeypatch) -> list[str]:
    """Record every key read from a .safetensors file (the list fills as files are read)."""
    read: list[str] = []
    original = weight_files._read_safetensors

    def spy(file, keys, prefix):
        read.extend(keys)
        return original(file, keys, prefix)

    monkeypatch.setattr(weight_files, "_read_safetensors", spy)
    return read


# Bodies the token route refuses, and the status each gets (unit tests and the real server use both).
BAD_REQUESTS = [
    (b"not json", 400),
    (b"[1, 2]", 400),
    (b'{"text": 5}', 400),
    (b'{"text": "x", "chunking": "nope"}', 400),
    (b'{"text": "x", "comma_backtrack": 75}', 400),
    (b'{"text": "x", "comma_backtrack": true}', 400),
    (b"\xff\xfe", 400),
    (json.dumps({"text": "a" * (MAX_TEXT_CHARS + 1)}).encode(), 413),
    (b" " * (MAX_BODY_BYTES + 1), 413),
    (b"[" * 100_000 + b"]" * 100_000, 400),  # nested too deeply: a 400, not a RecursionError (500)
]


def load_benchmark(name: str):
    """A script of ``benchmarks/`` as a module (its helpers are what a test reuses), without touching sys.path."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"clip_suite_benchmarks.{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
