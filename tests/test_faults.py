"""Faults (issue 24): the app process killed mid-save, a read-only case log, a full disk.

Every review whose save was acknowledged must survive a SIGKILL; the database must open and pass
``PRAGMA integrity_check``; a case log that cannot be written gives one clear line and analyses go on.
"""
from __future__ import annotations

import contextlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from visionclip_app.store import CaseStore, StoreError

REPO = Path(__file__).resolve().parents[1]
KILL_TRIALS = int(os.environ.get("VISIONCLIP_KILL_TRIALS", "50"))

# A spawner imports the store once, then forks one writer per trial (a fresh process start per trial costs
# seconds on a loaded machine). Each writer saves reviews in a loop the way the app does (CaseStore.log_case /
# add_revision, one commit each) and prints each id only after the call returned: what the browser is told.
SPAWNER = r"""
import os, signal, sys
from visionclip_app.store import CaseRecord, CaseStore, Review
signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # killed writers are reaped by the kernel
db = sys.argv[1]
CaseStore(db)
print("spawner ready", flush=True)
for line in sys.stdin:
    cmd, trial = line.split()
    trial = int(trial)
    if cmd == "sync":
        os.write(1, f"synced {trial}\n".encode())
        continue
    if os.fork():
        continue
    store = CaseStore(db)
    os.write(1, f"ready {trial} {os.getpid()}\n".encode())
    i = 0
    while True:
        i += 1
        rec = CaseRecord.of(reviewer=f"r{trial}", verdict="disagree", image_sha256=f"{trial:08d}{i:056d}",
                         thumbnail=bytes(2000), prompt_set_json="{}", prompt_set_sha256="p",
                         probabilities={"normal": 0.4, "glaucoma": 0.6}, model_id="m", predicted_label="glaucoma",
                         corrected_labels=["normal"], notes=f"trial {trial} save {i} " + "x" * (i % 500))
        case_id = store.log_case(rec)
        os.write(1, f"case {trial} {case_id}\n".encode())  # one write: a kill never splits a line
        rev = store.add_revision(case_id, Review(reviewer=f"r{trial}", verdict="agree", notes="second look"))
        os.write(1, f"rev {trial} {case_id} {rev}\n".encode())
"""


class Spawner:
    def __init__(self, db: Path):
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen([sys.executable, "-c", SPAWNER, str(db)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(iter(self.proc.stdout.readline, "")),
                                       daemon=True)
        self.reader.start()
        self.wait_for("spawner ready")

    def wait_for(self, prefix: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hit = [ln for ln in list(self.lines) if ln.startswith(prefix)]
            if hit:
                return hit[0]
            if self.proc.poll() is not None:
                raise AssertionError(self.proc.stderr.read())
            time.sleep(0.005)
        raise AssertionError(f"no {prefix!r} within {timeout} s")

    def send(self, text: str) -> None:
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def trial(self, trial: int, rng: random.Random) -> tuple[list[int], list[tuple[int, int]]]:
        self.send(f"go {trial}")
        pid = int(self.wait_for(f"ready {trial} ").split()[2])
        time.sleep(rng.uniform(0.0, 0.15))  # a random moment: before, during or between commits
        os.kill(pid, signal.SIGKILL)  # no cleanup, no atexit, mid-transaction or not
        while os.path.exists(f"/proc/{pid}"):  # reaped by the kernel once dead
            time.sleep(0.002)
        self.send(f"sync {trial}")  # the writer's lines precede this answer in the pipe
        self.wait_for(f"synced {trial}")
        mine = [ln.split() for ln in list(self.lines) if ln.split()[1:2] == [str(trial)]]
        cases = [int(w[2]) for w in mine if w[0] == "case"]
        revs = [(int(w[2]), int(w[3])) for w in mine if w[0] == "rev"]
        return cases, revs

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@pytest.mark.slow
def test_sigkill_during_saves_loses_no_acknowledged_review(tmp_path):
    db = tmp_path / "cases.db"
    spawner = Spawner(db)
    rng = random.Random(24)
    acked_cases, acked_revs, t0 = [], [], time.monotonic()
    try:
        for trial in range(KILL_TRIALS):
            cases, revs = spawner.trial(trial, rng)
            acked_cases += cases
            acked_revs += revs
            with contextlib.closing(sqlite3.connect(db)) as conn:  # opens after every crash (WAL recovery)
                assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
                present = {r[0] for r in conn.execute("select id from cases")}
                assert set(acked_cases) <= present, f"trial {trial}: acknowledged cases lost"
                revisions = set(conn.execute("select case_id, revision from revisions"))
                assert set(acked_revs) <= revisions, f"trial {trial}: acknowledged revisions lost"
                # No half-saved case: a case and its first revision are one transaction.
                assert not list(conn.execute("select id from cases where id not in "
                                             "(select case_id from revisions where revision = 1)"))
    finally:
        spawner.close()
    store = CaseStore(db)  # the store itself opens after the last crash
    assert store.count() >= len(acked_cases)
    assert len(acked_cases) > 0 and len(acked_revs) > 0, "no save was acknowledged: the kills came too early"
    print(f"{KILL_TRIALS} kills, {len(acked_cases)} acknowledged cases and {len(acked_revs)} revisions kept "
          f"in {time.monotonic() - t0:.0f} s")


# ------------------------------------------------------------------------------------- read-only, full disk
@contextlib.contextmanager
def small_tmpfs(path: Path, size: str = "2m"):
    path.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True,
                       capture_output=True)
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"cannot mount a small tmpfs here (needs root in a privileged container): {e}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture(scope="module")
def analysed(default_model, tmp_path_factory):
    """One analysis (from the app's handler), to be saved repeatedly."""
    import pandas as pd
    from PIL import Image

    from engine.synth import render_fundus
    from visionclip_app import handlers as h

    d = tmp_path_factory.mktemp("faults")
    img = d / "f.png"
    Image.fromarray(render_fundus(5, 256).image).save(img)
    ctx = h.AppContext.create(default_model, CaseStore(d / "c.db"), d / "w")
    table = pd.DataFrame([["normal", "a normal fundus"], ["glaucoma", "a large optic cup"]], columns=h.PROMPT_COLUMNS)
    out = h.analyse(ctx, str(img), table, h.saliency_methods()[0], 0.5)
    assert out[0].startswith(h.STATUS_OK)
    return str(img), table, out[-1]


def assert_save_fails_cleanly_and_analysis_works(ctx, analysed, words):
    from visionclip_app import handlers as h

    img, table, state = analysed
    status, case_id = h.save_review(ctx, state, "dr a", "agree", None, 0.9, "note")
    assert case_id is None and status.startswith(h.STATUS_ERROR) and "\n" not in status, status
    assert words in status and "nothing was changed" in status, status
    out = h.analyse(ctx, img, table, h.saliency_methods()[0], 0.5)  # analyses are still served
    assert out[0].startswith(h.STATUS_OK) and out[1], out[0]


def test_read_only_case_log(default_model, analysed, tmp_path):
    from visionclip_app import handlers as h

    mnt = tmp_path / "mnt"
    with small_tmpfs(mnt):
        ctx = h.AppContext.create(default_model, CaseStore(mnt / "c.db"), tmp_path / "w")
        status, first = h.save_review(ctx, analysed[2], "dr a", "agree", None, None, "kept")
        assert first == 1, status
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        assert_save_fails_cleanly_and_analysis_works(ctx, analysed, "case log")
        with pytest.raises(StoreError):  # the store's reads also fail in one line, not a traceback
            ctx.store.search()
        subprocess.run(["mount", "-o", "remount,rw", str(mnt)], check=True)
        assert [c["id"] for c in ctx.store.search()] == [1]  # nothing lost, nothing half-written
        assert h.save_review(ctx, analysed[2], "dr a", "agree", None, None, "")[1] == 2
        with contextlib.closing(sqlite3.connect(mnt / "c.db")) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_full_disk(default_model, analysed, tmp_path):
    from visionclip_app import handlers as h

    mnt = tmp_path / "mnt"
    with small_tmpfs(mnt, "2m"):
        ctx = h.AppContext.create(default_model, CaseStore(mnt / "c.db"), tmp_path / "w")
        saved = [h.save_review(ctx, analysed[2], "dr a", "agree", None, None, f"n{i}")[1] for i in range(3)]
        assert saved == [1, 2, 3]
        with open(mnt / "filler", "wb") as fh:  # fill the file system to the last block
            with contextlib.suppress(OSError):
                while True:
                    fh.write(bytes(65536))
                    fh.flush()
        assert_save_fails_cleanly_and_analysis_works(ctx, analysed, "full")
        os.remove(mnt / "filler")
        assert h.save_review(ctx, analysed[2], "dr a", "agree", None, None, "after")[1] == 4
        with contextlib.closing(sqlite3.connect(mnt / "c.db")) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            assert [r[0] for r in conn.execute("select notes from cases order by id")] == ["n0", "n1", "n2", "after"]


def test_read_only_case_log_at_startup_is_one_line(tmp_path):
    """launch.py with a case log it cannot open prints one error line and exits 2 (no traceback)."""
    mnt = tmp_path / "mnt"
    with small_tmpfs(mnt):
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        with pytest.raises(StoreError) as e:
            CaseStore(mnt / "new.db")
        assert "\n" not in str(e.value)
