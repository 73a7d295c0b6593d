"""Run a piece of Python in a child process bounded in time and memory, for tests of hostile inputs.

A defect of the kinds these tests catch (a hang, exponential work, gigabytes of memory) must fail the test,
not the machine: the child is killed when it runs past ``timeout`` seconds or when its resident memory
passes ``max_rss_mb`` (polled every 20 ms from /proc), and the test gets a failed :class:`Outcome`.

The peak is the child's own: its VmHWM, which it writes to a file as it exits, and the polls. Not
``wait4``'s ``ru_maxrss``: the child is started by vfork, and Linux carries the parent's high-water mark
into it at exec, so a test process that once held a gigabyte would make every child look that big.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
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


_REPORT_PEAK = """\
import atexit as _atexit, os as _os
def _report_peak(path=_os.environ.pop("BOUNDED_PEAK_FILE", "")):
    with open("/proc/self/status") as status, open(path, "w") as out:
        out.write(next(line.split()[1] for line in status if line.startswith("VmHWM:")))
_atexit.register(_report_peak)
"""


def _reported_peak_mb(path: str) -> float:
    try:
        with open(path) as f:
            return int(f.read() or 0) / 1024
    except (OSError, ValueError):
        return 0.0


def run_bounded(code: str, *, timeout: float, max_rss_mb: float, args=(), stdin: bytes | None = None, cwd=None) -> Outcome:
    """Run ``code`` (dedented) with this interpreter; ``clip_suite`` importable as in the parent."""
    with tempfile.TemporaryDirectory() as tmp:
        peak_file = os.path.join(tmp, "peak")
        outcome = _run(code, timeout, max_rss_mb, args, stdin, cwd, peak_file)
        peak = max(outcome.peak_rss_mb, _reported_peak_mb(peak_file))
    if peak > max_rss_mb and not outcome.killed:
        return Outcome(None, outcome.stdout, outcome.stderr, outcome.seconds, peak, "memory")
    outcome.peak_rss_mb = peak
    return outcome


def _run(code, timeout, max_rss_mb, args, stdin, cwd, peak_file) -> Outcome:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    env.setdefault("PYTHONIOENCODING", "utf-8")
    code = textwrap.dedent(code)
    if HAS_PROC:
        env["BOUNDED_PEAK_FILE"] = peak_file
        code = _REPORT_PEAK + code
    cmd = [sys.executable, "-c", code, *map(str, args)]
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
        pid, status, _ = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            returncode = os.waitstatus_to_exitcode(status)
            proc.returncode = returncode
            break
        peak = max(peak, _rss_mb(proc.pid))
        if peak > max_rss_mb:
            killed = "memory"
        elif time.perf_counter() - start > timeout:
            killed = "time"
        if killed:
            proc.kill()
            os.wait4(proc.pid, 0)
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
