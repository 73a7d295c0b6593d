"""Find the processes a test started, even after their parent died and they were adopted by another.

A process started with ``marked_env(mark)`` passes the mark on to every process it starts (the environment
is inherited, spawn included), so ``marked(mark)`` lists all of them by reading ``/proc/PID/environ``:
the way to check that nothing survives a command killed with SIGKILL (Linux only: ``HAS_PROC``).
"""

from __future__ import annotations

import os
import signal
import time
import uuid

MARK = "CLIP_SUITE_TEST_MARK"


def marked_env(env: dict | None = None) -> tuple[dict, str]:
    """(a copy of ``env`` or os.environ with a fresh mark, the mark)."""
    mark = uuid.uuid4().hex
    env = dict(os.environ if env is None else env)
    env[MARK] = mark
    return env, mark


def marked(mark: str) -> list[int]:
    """Pids of the living processes whose environment holds ``mark`` (zombies have none, so they do not count)."""
    needle = f"{MARK}={mark}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    found.append(int(entry))
        except OSError:  # gone meanwhile, or not ours
            continue
    return found


def survivors(mark: str, wait: float = 5.0) -> list[str]:
    """The marked processes still alive after ``wait`` seconds (each as "pid cmdline"); they are then killed,
    so a failing test leaves nothing behind."""
    deadline = time.monotonic() + wait
    while (pids := marked(mark)) and time.monotonic() < deadline:
        time.sleep(0.1)
    described = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")[:160]
            described.append(f"{pid} {cmdline}")
            os.kill(pid, signal.SIGKILL)
        except OSError:
            continue
    return described
