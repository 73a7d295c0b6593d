"""The wheel a user installs holds every package folder, the vocabulary, py.typed, the web extension and the
example workflows (setup.py finds the packages; this builds the wheel and looks inside)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_FOLDERS = ("clip_impl", "cli", "nodes")


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory) -> set[str]:
    pytest.importorskip("setuptools")
    pytest.importorskip("wheel")
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
        check=True, capture_output=True, text=True, timeout=300,
    )
    (wheel,) = out.glob("clip_suite-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        return set(zf.namelist())


def test_every_package_is_in_the_wheel(wheel_names):
    packages = [
        "clip_suite/" + p.parent.relative_to(ROOT).as_posix() + "/__init__.py"
        for folder in PACKAGE_FOLDERS for p in (ROOT / folder).rglob("__init__.py")
    ]
    assert len(packages) >= 10
    missing = sorted(set(packages + ["clip_suite/__init__.py", "clip_suite/__main__.py"]) - wheel_names)
    assert not missing, f"the wheel lacks {missing}"


def test_every_module_is_in_the_wheel(wheel_names):
    modules = {"clip_suite/" + p.relative_to(ROOT).as_posix() for f in PACKAGE_FOLDERS for p in (ROOT / f).rglob("*.py")}
    assert not sorted(modules - wheel_names)


def test_data_and_web_files_are_in_the_wheel(wheel_names):
    wanted = [
        "clip_suite/py.typed", "clip_suite/clip_impl/py.typed",
        "clip_suite/clip_impl/data/bpe_simple_vocab_16e6.txt.gz", "clip_suite/clip_impl/data/LICENSE-BPE",
        *("clip_suite/" + p.relative_to(ROOT).as_posix() for p in (ROOT / "web").glob("*.js")),
        *("clip_suite/" + p.relative_to(ROOT).as_posix() for p in (ROOT / "example_workflows").glob("*.json")),
    ]
    missing = [name for name in wanted if name not in wheel_names]
    assert not missing, missing


def test_no_tests_or_benchmarks_in_the_wheel(wheel_names):
    assert not [n for n in wheel_names if n.startswith(("clip_suite/tests/", "clip_suite/benchmarks/"))]
