"""Integration tests against a real ComfyUI checkout: skipped unless COMFYUI_PATH is set.

A module with ``NEEDS_COMFYUI = False`` is exempt (e.g. ``test_a1111_parity.py``, which needs ``A1111_MODULES``).

The environment must have ComfyUI's requirements installed (``../shared/tools/comfyui-env.sh`` makes one).
``comfy_path`` puts ComfyUI on sys.path and switches it to the CPU before anything imports
``comfy.model_management``. Full-size random-weight models come from ``tests/full_size.py``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

COMFYUI_PATH = os.environ.get("COMFYUI_PATH")


def pytest_collection_modifyitems(config, items):
    if COMFYUI_PATH:
        return
    skip = pytest.mark.skip(reason="needs a real ComfyUI: set COMFYUI_PATH")
    here = Path(__file__).parent
    for item in items:
        # A test module that needs no ComfyUI says so with NEEDS_COMFYUI = False and skips on its own terms.
        needs_comfyui = getattr(getattr(item, "module", None), "NEEDS_COMFYUI", True)
        if needs_comfyui and here in Path(str(item.fspath)).parents:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def comfy_path() -> Path:
    """The ComfyUI checkout, importable in this process and running on the CPU."""
    path = Path(COMFYUI_PATH).resolve()
    if not (path / "comfy" / "sd1_clip.py").is_file():
        pytest.fail(f"COMFYUI_PATH={path} is not a ComfyUI checkout")
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
    # pytest imports the repository root (it has an __init__.py) as a top-level module named after the
    # checkout folder; a checkout named like one of ComfyUI's top-level modules would shadow it.
    for name in ("nodes", "server", "execution", "folder_paths", "utils", "comfy", "main"):
        module = sys.modules.get(name)
        if module is not None and not str(getattr(module, "__file__", "")).startswith(str(path)):
            for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
                del sys.modules[key]
    import comfy.cli_args

    comfy.cli_args.args.cpu = True
    return path


@pytest.fixture(scope="session")
def comfy(comfy_path, tmp_path_factory, full_size_models):
    """ComfyUI in this process with our pack loaded from a custom_nodes folder, model folders pointing at
    the full-size test files, and the test-only nodes registered (see comfy_harness.py)."""
    sys.dont_write_bytecode = True  # never write into the ComfyUI checkout
    import comfy_harness as h

    c = h.Comfy(comfy_path, tmp_path_factory.mktemp("comfyui"), full_size_models)
    c.register("ClipSuiteTestSink", h.ClipSuiteTestSink)
    c.register("ClipSuiteTestClipLora", h.ClipSuiteTestClipLora)
    c.register("ClipSuiteTestLoraLoaderClip", h.ClipSuiteTestLoraLoaderClip)
    return c


@pytest.fixture(scope="session")
def full_size_models():
    """Builder of cached full-size random-weight files (see tests/full_size.py)."""
    from helpers import full_size

    return full_size.build
