"""bench/run_all.py: one PERFORMANCE.md table from each bench's JSON (no bench is run here)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

_spec = importlib.util.spec_from_file_location("bench_run_all", Path(__file__).resolve().parent.parent / "bench" / "run_all.py")
run_all = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run_all)

LOAD = {"clients": 8, "rounds": 50, "throughput_rps": 2.1, "saves_per_min": 37.5,
        "latency_all_s": {"p50": 1.8, "p95": 12.1, "p99": 17.4},
        "latency_s": {"analyse": {"n": 400, "p50": 8.7, "p95": 16.2, "p99": 18.7}},
        "failed_requests": 0, "new_cases": 400, "new_revisions": 400, "expected_new_cases": 400,
        "integrity_check": "ok",
        "overload": {"submitted": 100, "max_queue": 64, "answered": 67, "refused_busy": 33, "failed_otherwise": 0,
                     "slowest_refusal_s": 8.1}}


def test_full_load_runs_the_issue_size_and_rows_say_which_size():
    assert run_all.command("load", Path("x.json"))[2:6] == ["--clients", "8", "--rounds", "5"]
    full = run_all.command("load", Path("x.json"), full_load=True)
    assert full[2:] == ["--clients", "8", "--rounds", "50", "--overload", "100", "--json", "x.json"]
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
    tstr = {"results": [{"task": "palm", "n_synthetic": 60, "tstr": {"balanced_accuracy": 0.7, "auc": 0.8},
                         "real_probe_cv5": {"balanced_accuracy": 0.9, "auc": 0.95}}]}
    assert [r[5] for r in run_all.rows_tstr(tstr)] == [0.9, 0.95]
    (tmp_path / "load.json").write_text(json.dumps(LOAD))
    results = [run_all.run_one("load", tmp_path, 1, full_load=True, reuse=True),  # reused: nothing is run
               {"name": "adapt", "status": "ok", "rows": run_all.rows_adapt(adapt)},
               {"name": "train", "status": "failed (exit 1, no JSON): boom", "rows": []}]
    text = run_all.render(results, full_load=True)
    table = [ln for ln in text.splitlines() if ln.startswith("|")]
    assert len([ln for ln in table if ln.startswith("| bench |")]) == 1  # one table
    assert "- Commit: " in text and "- Machine: " in text and "- Date (UTC): " in text
    assert "`python bench/run_all.py --full-load`" in text
    assert "| adapt | palm_dev: linear-probe, k=16, balanced accuracy | 0.9 |" in text and "| 1.50 (higher" in text
    assert "| train | failed (exit 1, no JSON): boom |" in text
    assert "`python bench/load.py --clients 8 --rounds 50 --overload 100`" in text


def test_a_failed_bench_does_not_show_an_earlier_runs_figures(tmp_path, monkeypatch):
    (tmp_path / "load.json").write_text(json.dumps(LOAD))  # left by an earlier run
    monkeypatch.setitem(run_all.BENCHES, "load", ("load.py", ["--no-such-option"], run_all.rows_load))
    r = run_all.run_one("load", tmp_path, 60)
    assert r["status"].startswith("failed") and not r["rows"]
