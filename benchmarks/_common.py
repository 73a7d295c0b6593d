"""Shared benchmark helpers: paired timing with medians, the fp32 matmul ceiling, ComfyUI import.

Every benchmark runs its references in the same process run as our code, alternating the two so that
machine noise hits both, takes the median of several runs after a warm-up, and prints ratios.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # full_size.py builds the random-weight models


def peak_rss_mib() -> float:
    """This process's own peak resident memory (MiB). VmHWM, not ``ru_maxrss``: a child started by vfork
    (subprocess) carries its parent's high-water mark from exec on, so a parent that once held gigabytes
    would inflate every child's figure."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def setup_threads() -> int:
    """Use every core (torch's default may be lower); returns the thread count."""
    n = os.cpu_count() or 1
    torch.set_num_threads(n)
    return n


def paired_medians(fns: dict, runs: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds per callable, running them in alternation ``runs`` times after ``warmup`` rounds."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def matmul_ceiling(shapes, runs: int = 5) -> tuple[float, float]:
    """fp32 GFLOP/s: (best over the given (M, K, N) GEMM shapes, a 2048^3 square GEMM)."""
    rates = []
    for m, k, n in list(shapes) + [(2048, 2048, 2048)]:
        a, b = torch.randn(m, k), torch.randn(k, n)
        for _ in range(2):
            a @ b
        ts = []
        for _ in range(runs):
            t0 = time.perf_counter()
            a @ b
            ts.append(time.perf_counter() - t0)
        rates.append(2 * m * k * n / statistics.median(ts) / 1e9)
    return max(rates[:-1]), rates[-1]


def import_comfyui(path: str | None):
    """Put a ComfyUI checkout on sys.path, on the CPU; returns the comfy.sd module or None."""
    if not path:
        return None
    sys.path.insert(0, str(Path(path).resolve()))
    import comfy.cli_args

    comfy.cli_args.args.cpu = True
    import comfy.sd

    return comfy.sd


def max_rel_diff(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """max |ours - ref| / max |ref|."""
    return float((ours.float() - ref.float()).abs().max() / ref.float().abs().max().clamp_min(1e-30))


def fmt(seconds: float) -> str:
    return f"{seconds * 1000:8.1f} ms" if seconds < 10 else f"{seconds:8.2f} s"
