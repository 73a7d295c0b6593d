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
    import comfy.cli_args

    comfy.cli_args.args.cpu = True
    return path


@pytest.fixture(scope="session")
def full_size_models():
    """Builder of cached full-size random-weight files (see tests/full_size.py)."""
    import full_size

    return full_size.build
