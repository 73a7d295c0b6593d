"""A ``score`` or ``classify`` run killed with SIGKILL mid-run leaves no process behind (issue 26, point 13):
its image loader's workers, and multiprocessing's helper, end with it (``search`` is killed the same way in
test_search_cli.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers.bounded import HAS_PROC
from helpers.processes import marked, marked_env, survivors
from helpers.vision_fixtures import v336_model, v_model, vg_model, vh_model, vision_dir  # noqa: F401

pytestmark = pytest.mark.skipif(not HAS_PROC, reason="finds the processes through /proc (Linux)")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("killed")
    rng = np.random.default_rng(0)
    for i in range(200):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(d / f"img_{i:03d}.png")
    return d


@pytest.mark.parametrize("command", [
    ["score", "--prompt", "a fox", "--workers", "2", "--batch-size", "1", "--out", os.devnull],
    ["classify", "--labels", "fox,car", "--batch-size", "1", "--out", os.devnull],
])
def test_no_process_outlives_a_run_killed_with_sigkill(vision_dir, folder, tmp_path, command):
    env, mark = marked_env()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(ROOT / "tests")]))
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    cmd = [sys.executable, "-m", "clip_suite", command[0], "--model", str(vision_dir / "clip_hf.safetensors"),
           *command[1:], str(folder)]
    with (tmp_path / "stderr").open("w") as stderr:  # not a pipe: a surviving worker would hold it open
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=stderr, env=env)
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and proc.poll() is None and len(marked(mark)) < 3:
                time.sleep(0.05)  # the run, multiprocessing's helper and a worker: loading has begun
            time.sleep(0.3)
            assert proc.poll() is None, f"the run ended before it was killed: {(tmp_path / 'stderr').read_text()}"
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
    left = survivors(mark, wait=5.0)
    assert not left, f"processes of the killed {command[0]} run are still alive: {left}"
