"""Run a piece of Python in a child process bounded in time and memory, for tests of hostile inputs.

A defect of the kinds these tests catch (a hang, exponential work, gigabytes of memory) must fail the test,
not the machine: the child is killed when it runs past ``timeout`` seconds or when its resident memory
passes ``max_rss_mb`` (polled every 20 ms from /proc), and the test gets a failed :class:`Outcome`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass

HAS_PROC = os.path.exists("/proc/self/status")


@dataclass
class Outcome:
    returncode: int | None  # None when killed
    stdout: str
    stderr: str
    seconds: float
    peak_rss_mb: float
    killed: str = ""  # "time" or "memory" when the child was killed

    @property
    def ok(self) -> bool:
        return not self.killed and self.returncode == 0


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run_bounded(code: str, *, timeout: float, max_rss_mb: float, args=(), stdin: bytes | None = None, cwd=None) -> Outcome:
    """Run ``code`` (dedented) with this interpreter; ``clip_suite`` importable as in the parent."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    env.setdefault("PYTHONIOENCODING", "utf-8")
    cmd = [sys.executable, "-c", textwrap.dedent(code), *map(str, args)]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=cwd)
    chunks = {"out": b"", "err": b""}

    def drain(stream, key):
        chunks[key] = stream.read()

    readers = [threading.Thread(target=drain, args=(proc.stdout, key)) if key == "out" else threading.Thread(target=drain, args=(proc.stderr, key)) for key in chunks]
    for t in readers:
        t.start()
    try:
        if stdin:
            proc.stdin.write(stdin)
        proc.stdin.close()
    except BrokenPipeError:
        pass
    peak, killed, returncode = 0.0, "", None
    while True:
        # wait4 reaps the child with its resource usage: ru_maxrss is the true peak, spikes between polls too.
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            returncode = os.waitstatus_to_exitcode(status)
            peak = max(peak, usage.ru_maxrss / 1024)
            proc.returncode = returncode
            break
        peak = max(peak, _rss_mb(proc.pid))
        if peak > max_rss_mb:
            killed = "memory"
        elif time.perf_counter() - start > timeout:
            killed = "time"
        if killed:
            proc.kill()
            _, _, usage = os.wait4(proc.pid, 0)
            proc.returncode = -9
            break
        time.sleep(0.02)
    if peak > max_rss_mb and not killed:
        killed = "memory"
    for t in readers:
        t.join()
    seconds = time.perf_counter() - start
    return Outcome(
        None if killed else returncode,
        chunks["out"].decode("utf-8", "replace"),
        chunks["err"].decode("utf-8", "replace"),
        seconds,
        peak,
        killed,
    )


def describe(outcome: Outcome) -> str:
    """One line for an assertion message."""
    what = f"killed ({outcome.killed})" if outcome.killed else f"exit {outcome.returncode}"
    return f"{what} after {outcome.seconds:.1f} s, peak RSS {outcome.peak_rss_mb:.0f} MB; stderr: {outcome.stderr[-800:]}"
