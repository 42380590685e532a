"""bench/run_all.py: one PERFORMANCE.md table from each bench's JSON (no bench is run here)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bench import run_all

REPO = Path(__file__).resolve().parent.parent

LOAD = {"clients": 8, "rounds": 50, "throughput_rps": 2.1, "saves_per_min": 37.5,
        "latency_all_s": {"p50": 1.8, "p95": 12.1, "p99": 17.4},
        "latency_s": {"analyse": {"n": 400, "p50": 8.7, "p95": 16.2, "p99": 18.7}},
        "failed_requests": 0, "new_cases": 400, "new_revisions": 400, "expected_new_cases": 400,
        "integrity_check": "ok",
        "overload": {"submitted": 100, "max_queue": 64, "answered": 67, "refused_busy": 33, "failed_otherwise": 0,
                     "slowest_refusal_s": 8.1}}


def test_full_load_runs_the_issue_size_and_rows_say_which_size():
    assert run_all.command("load", Path("x.json"))[1:7] == ["-m", "bench.load", "--clients", "8", "--rounds", "5"]
    full = run_all.command("load", Path("x.json"), full_load=True)
    assert full[3:] == ["--clients", "8", "--rounds", "50", "--overload", "100", "--json", "x.json"]
    assert run_all.command("synth", Path("x.json"), full_load=True) == run_all.command("synth", Path("x.json"))
    rows = run_all.rows_load(LOAD)
    assert all(r[0].startswith("8 clients x 50 rounds") or r[0].startswith("beyond capacity") for r in rows)
    figures = {r[0]: r[1] for r in rows}
    assert figures["8 clients x 50 rounds: new cases / revisions (expected)"] == "400 / 400 (400)"
    assert figures["8 clients x 50 rounds: analyse p50 / p95 / p99"] == "8.70 / 16.20 / 18.70"
    assert "33 refused busy" in figures["beyond capacity: 100 analyses at once, --max-queue 64"]


def test_peer_rows_and_one_table(tmp_path):
    adapt = {"folders": {"palm_dev": {"curves": {"zero-shot": {"4": {"mean": 0.6}, "16": {"mean": 0.6}},
                                                 "linear-probe": {"4": {"mean": 0.7}, "16": {"mean": 0.9}}}}}}
    (row,) = run_all.rows_adapt(adapt)
    assert row[:2] == ("palm_dev: linear-probe, k=16, balanced accuracy", 0.9) and row[4:6] == ("zero-shot", 0.6)
    (tmp_path / "load.json").write_text(json.dumps(LOAD))
    results = [run_all.run_one("load", tmp_path, 1, full_load=True, reuse=True),  # reused: nothing is run
               {"name": "adapt", "status": "ok", "rows": run_all.rows_adapt(adapt)},
               {"name": "train", "status": "failed (exit 1, no JSON): boom", "rows": []}]
    text = run_all.render(results, full_load=True, load_before=1.25)
    table = [ln for ln in text.splitlines() if ln.startswith("|")]
    assert len([ln for ln in table if ln.startswith("| bench |")]) == 1  # one table
    assert "- Commit: " in text and "- Machine: " in text and "- Date (UTC): " in text
    assert "- Load average (1 min): 1.25 before, " in text
    assert "`python -m bench.run_all --full-load`" in text
    assert str(REPO) not in text and os.uname().nodename not in text  # no machine paths or host name
    assert "| adapt | palm_dev: linear-probe, k=16, balanced accuracy | 0.9 |" in text and "| 1.50 (higher" in text
    assert "| train | failed (exit 1, no JSON): boom |" in text
    assert "`python -m bench.load --clients 8 --rounds 50 --overload 100`" in text


def test_a_failed_bench_does_not_show_an_earlier_runs_figures(tmp_path, monkeypatch):
    (tmp_path / "load.json").write_text(json.dumps(LOAD))  # left by an earlier run
    monkeypatch.setitem(run_all.BENCHES, "load", ("bench.load", ["--no-such-option"], run_all.rows_load))
    r = run_all.run_one("load", tmp_path, 60)
    assert r["status"].startswith("failed") and not r["rows"]


def test_dry_run_lists_every_bench_as_a_module_and_runs_nothing(tmp_path):
    out = tmp_path / "perf.md"
    proc = subprocess.run([sys.executable, "-m", "bench.run_all", "--dry-run", "--work", str(tmp_path), "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert [ln.split()[0] for ln in lines] == list(run_all.BENCHES)
    for ln, (name, (module, _, _)) in zip(lines, run_all.BENCHES.items()):
        assert f" -m {module} " in ln and ln.endswith(f"--json {tmp_path / (name + '.json')}"), ln
    assert not out.exists() and not list(tmp_path.glob("*.json"))  # nothing ran, nothing written


def test_missing_bench_module_is_listed_as_skipped(tmp_path, monkeypatch):
    monkeypatch.setitem(run_all.BENCHES, "synth", ("bench.no_such_bench", [], run_all.rows_synth))
    r = run_all.run_one("synth", tmp_path, 5)
    assert r["status"] == "skipped: bench.no_such_bench not present" and not r["rows"]
