"""Test harness: run the app as a child process on a free local port (browser tests, bench/app.py).
``free_port`` is bench.common's, the one helper for a free local port."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from bench.common import free_port  # noqa: F401  (re-exported for the tests)

# Debian's chromium, headless, quiet: how the tests and bench/app.py drive the local app.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def start_app(port: int, db: Path, log: Path, extra: list[str] | None = None,
              tmpdir: Path | None = None) -> subprocess.Popen:
    """``python -m visionclip_app --port PORT --db DB`` with its output in ``log``."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if tmpdir is not None:
        env["VISIONCLIP_TMPDIR"] = str(tmpdir)
    fh = Path(log).open("w")
    return subprocess.Popen([sys.executable, "-m", "visionclip_app", "--port", str(port), "--db", str(db),
                             *(extra or [])], stdout=fh, stderr=subprocess.STDOUT, env=env)


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 120, poll: float = 0.5) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"app exited early with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(poll)
    raise TimeoutError(f"app did not answer at {url} within {timeout} s")


def stop_app(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
