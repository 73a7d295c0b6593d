"""The image loader's worker processes end with their parent, even one killed with SIGKILL (issue 26, point
13): through Linux's parent-death signal when the pool was started by the main thread, and through the
workers' own watchdog (the pipe from the parent closing) when it was not."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from helpers.bounded import HAS_PROC
from helpers.processes import marked, marked_env, survivors

pytestmark = pytest.mark.skipif(not HAS_PROC, reason="finds the processes through /proc (Linux)")

# Starts a 2-worker loader (in the main thread or another one), waits until both workers run, prints
# their pids and kills itself with SIGKILL: no cleanup of any kind runs.
CHILD = """
import os, signal, sys, threading
from clip_suite.clip_impl.images import ImageLoader

if __name__ == "__main__":
    box = []
    start = lambda: box.append(ImageLoader(workers=2))
    if sys.argv[1] == "main":
        start()
    else:
        t = threading.Thread(target=start)
        t.start()
        t.join()
    loader = box[0]
    for future in [loader._pool.submit(os.getpid) for _ in range(8)]:
        future.result()
    with open(sys.argv[2], "w") as f:
        f.write(" ".join(map(str, loader._pool._processes)))
    os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("started_by", ["main", "thread"])
def test_workers_end_with_a_parent_killed_with_sigkill(tmp_path, started_by):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env, mark = marked_env()
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    pids, err = tmp_path / "pids", tmp_path / "stderr"
    with err.open("w") as stderr:  # a file, not a pipe: workers that outlive the child would hold a pipe open
        code = subprocess.call([sys.executable, str(script), started_by, str(pids)], env=env,
                               stdout=subprocess.DEVNULL, stderr=stderr, timeout=120)
    assert code == -signal.SIGKILL, err.read_text()[-2000:]
    workers = [int(p) for p in pids.read_text().split()]
    assert len(workers) == 2
    t0 = time.monotonic()
    left = survivors(mark, wait=5.0)
    assert not left, f"loader processes outlived their parent: {left}"
    assert time.monotonic() - t0 < 5.0 and not marked(mark)
