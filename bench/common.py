"""What several benches need, written once: the machine's description, its load average, the commit,
best-of timing, same-run peer ratios, percentiles and a free local port."""
from __future__ import annotations

import os
import platform
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
# The real labelled photographs beside the checkout (evaluation only; see its README)
EVAL_ROOT = REPO.parent / "shared" / "eval"


def machine() -> str:
    """CPU model, CPU count, GPU, Python and OS: no host name, user or path."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = "no GPU"
    try:
        import torch
        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return f"{cpu}, {os.cpu_count()} CPUs, {gpu}, Python {platform.python_version()}, {platform.system()}"


def load_average() -> float | None:
    """The 1-minute load average (None where the OS has none); above the CPU count, timings are noisy."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def commit() -> str:
    """The short hash of HEAD, flagged when tracked files differ from it."""
    def git(*a):
        try:
            return subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True).stdout.strip()
        except OSError:
            return ""
    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + (" (with uncommitted changes)" if git("status", "--porcelain", "--untracked-files=no") else "")


def best_of(fn: Callable[[], object], repeats: int = 3) -> float:
    """The shortest wall time of ``repeats`` calls, in seconds (the least disturbed by other load)."""
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def ratio(value, peer, higher_is_better: bool) -> str:
    """``value / peer`` as a table cell, with which way is better; '-' when either is missing."""
    if not isinstance(value, (int, float)) or not isinstance(peer, (int, float)) or not peer:
        return "-"
    return f"{value / peer:.2f} ({'higher' if higher_is_better else 'lower'} is better)"


def percentile(xs: list[float], q: float) -> float | None:
    """The q-th percentile (linear interpolation between ranks, as numpy's default); None for no data."""
    if not xs:
        return None
    xs = sorted(xs)
    k = (len(xs) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
