#!/usr/bin/env python
"""Run every benchmark under bench/ with short settings and write PERFORMANCE.md (one table).

    python bench/run_all.py                 # all benches present, then PERFORMANCE.md
    python bench/run_all.py --dry-run       # list what would run, run nothing
    python bench/run_all.py --only synth load --out /tmp/perf.md

Each bench writes its figures with ``--json FILE``; this script reads them and puts each figure beside its
target and, where the bench measured one in the same run, its peer (as a ratio). Machine, date and commit
head the report. A bench whose script is missing is listed as skipped; one that fails is listed with its
exit status. Figures from a loaded machine are noisy: run this on a quiet one.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REAL_EVAL = REPO.parent / "shared" / "eval" / "eyedisease_dev"


def _mean(xs):
    xs = [x for x in xs if isinstance(x, (int, float))]
    return statistics.fmean(xs) if xs else None


# A row: (figure, value, unit, target, peer name, peer value, higher_is_better).
def rows_inference(j):
    out = []
    for device, rows in j.get("devices", {}).items():
        ours, peer = rows[0], rows[1] if len(rows) > 1 else {}
        out.append((f"{device}: batch-1 latency (network)", ours.get("batch1_ms_network"), "ms", None,
                    peer.get("model"), peer.get("batch1_ms_network"), False))
        out.append((f"{device}: batch-32 throughput", ours.get("batch32_img_per_s"), "img/s", None,
                    peer.get("model"), peer.get("batch32_img_per_s"), True))
    if j.get("peak_rss_mb") is not None:
        out.append(("peak RSS, load + classify one image", j["peak_rss_mb"], "MB", "< 1536", None, None, False))
    return out


def rows_synth(j):
    return [(f"render {size} px, per core", v["img_per_s_per_core"], "img/s", None, None, None, True)
            for size, v in j.get("sizes", {}).items()]


def rows_realism(j):
    return [("FD(synthetic, real half)", j.get("fd_half"), "", "lower; floor = real vs real",
             "real half A vs half B (floor)", j.get("fd_floor"), False)]


def rows_saliency(j):
    out = []
    conds = j.get("conditions", {})
    if conds:
        out.append(("pointing game, mean over conditions", _mean([c.get("pg_cam") for c in conds.values()]), "",
                    "> random map", "random map", _mean([c.get("pg_rand") for c in conds.values()]), True))
        out.append(("energy ratio in lesions, mean", _mean([c.get("er_cam") for c in conds.values()]), "",
                    "> 1", "random map", _mean([c.get("er_rand") for c in conds.values()]), True))
    for method, v in (j.get("speed_ms_224") or {}).items():
        out.append((f"{method}: one map at 224 px", v.get("median_ms"), "ms", None, None, None, False))
    return out


def rows_train(j):
    out = []
    runs = j.get("runs", [])
    for model in dict.fromkeys(r["model"] for r in runs):
        ours = next((r for r in runs if r["model"] == model and r["loop"] != "open_clip"), None)
        peer = next((r for r in runs if r["model"] == model and r["loop"] == "open_clip"), None)
        if ours:
            out.append((f"{model}: training samples/s", ours.get("rate"), "samples/s", ">= open_clip",
                        "open_clip loop" if peer else None, peer.get("rate") if peer else None, True))
    return out


def rows_app(j):
    return [("start-up to first page", j.get("startup_s"), "s", "< 20", None, None, False),
            ("Analyse press to results (median)", j.get("analyse_median_s"), "s", "< 1.5", None, None, False)]


def rows_load(j):
    lat = j.get("latency_all_s", {})
    return [("throughput", j.get("throughput_rps"), "req/s", None, None, None, True),
            ("latency p50 / p95 / p99", "/".join(f"{lat.get(k):.2f}" if lat.get(k) is not None else "-"
                                                 for k in ("p50", "p95", "p99")), "s", None, None, None, False),
            ("failed requests", j.get("failed_requests"), "", "0", None, None, False),
            ("new cases (expected)", f"{j.get('new_cases')} ({j.get('expected_new_cases')})", "", "equal",
             None, None, True),
            ("integrity_check", j.get("integrity_check"), "", "ok", None, None, True)]


def rows_generic(j):
    """Benches added later (adapt, tstr): their top-level numbers, as written."""
    return [(k, v, "", None, None, None, True) for k, v in j.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)][:8]


# name -> (script, short arguments, rows); the JSON path is appended as ``--json FILE``.
BENCHES = {
    "inference": ("inference.py", ["--runs", "5"], rows_inference),
    "synth": ("synth.py", ["--n", "8", "--sizes", "256", "512"], rows_synth),
    "realism": ("realism.py", ["--n", "60", "--size", "256", "--real", str(REAL_EVAL)], rows_realism),
    "saliency": ("saliency.py", ["--n", "2", "--road", "0", "--sanity", "1", "--repeats", "2", "--skip-scorecam"],
                 rows_saliency),
    "train": ("train.py", ["--steps", "2", "--warmup", "1", "--data-n", "32"], rows_train),
    "app": ("app.py", ["--runs", "3"], rows_app),
    "load": ("load.py", ["--clients", "8", "--rounds", "5"], rows_load),
    "adapt": ("adapt.py", [], rows_generic),
    "tstr": ("tstr.py", [], rows_generic),
}


def command(name: str, json_path: Path) -> list[str]:
    script, args, _ = BENCHES[name]
    return [sys.executable, str(REPO / "bench" / script), *args, "--json", str(json_path)]


def machine() -> str:
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


def commit() -> str:
    def git(*a):
        return subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True).stdout.strip()
    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + (" (with uncommitted changes)" if git("status", "--porcelain", "--untracked-files=no") else "")


def fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def ratio(value, peer, higher_is_better) -> str:
    if not isinstance(value, (int, float)) or not isinstance(peer, (int, float)) or not peer:
        return "-"
    return f"{value / peer:.2f} ({'higher' if higher_is_better else 'lower'} is better)"


def render(results: list[dict]) -> str:
    lines = ["# Performance", "",
             f"- Machine: {machine()}",
             f"- Date (UTC): {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M')}",
             f"- Commit: {commit()}",
             f"- Load average at the end: {os.getloadavg()[0]:.1f} (figures from a loaded machine are noisy; the "
             "ratios against a peer measured in the same run are the robust ones)",
             "- Regenerate: `python bench/run_all.py` (each bench's own command is in the last column)", "",
             "| bench | figure | value | unit | target | peer (same run) | peer value | ratio | command |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        cmd = "`" + " ".join(["python", f"bench/{BENCHES[r['name']][0]}", *BENCHES[r["name"]][1]]) + "`"
        if r["status"] != "ok":
            lines.append(f"| {r['name']} | {r['status']} | - | - | - | - | - | - | {cmd} |")
            continue
        for fig, value, unit, target, peer, peer_value, hib in r["rows"] or [("(no figures)", None, "", None, None,
                                                                               None, True)]:
            lines.append(f"| {r['name']} | {fig} | {fmt(value)} | {unit} | {target or '-'} | {peer or '-'} | "
                         f"{fmt(peer_value)} | {ratio(value, peer_value, hib)} | {cmd} |")
    return "\n".join(lines) + "\n"


def run_one(name: str, work: Path, timeout: float) -> dict:
    script = REPO / "bench" / BENCHES[name][0]
    if not script.is_file():
        return {"name": name, "status": f"skipped: bench/{script.name} not present", "rows": []}
    if name == "realism" and not REAL_EVAL.is_dir():
        return {"name": name, "status": f"skipped: no real photographs at {REAL_EVAL}", "rows": []}
    out = work / f"{name}.json"
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(command(name, out), cwd=REPO, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    except subprocess.TimeoutExpired:
        return {"name": name, "status": f"timed out after {timeout:.0f} s", "rows": []}
    (work / f"{name}.log").write_text(proc.stdout + proc.stderr)
    if not out.is_file():
        tail = " ".join((proc.stderr or proc.stdout).strip().splitlines()[-1:])[:150]
        return {"name": name, "status": f"failed (exit {proc.returncode}, no JSON): {tail}", "rows": []}
    rows = BENCHES[name][2](json.loads(out.read_text()))
    status = "ok"  # a bench that exits 1 on its own verdict (e.g. load: not ok) still wrote its figures
    return {"name": name, "status": status, "rows": rows, "exit": proc.returncode,
            "seconds": round(time.perf_counter() - t0, 1)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dry-run", action="store_true", help="list the commands, run nothing")
    p.add_argument("--only", nargs="+", choices=list(BENCHES), help="run only these benches")
    p.add_argument("--out", default=str(REPO / "PERFORMANCE.md"))
    p.add_argument("--timeout", type=float, default=1800, help="seconds per bench (default 1800)")
    p.add_argument("--work", default=None, help="keep each bench's JSON and log here (default: a temp dir)")
    args = p.parse_args(argv)
    names = args.only or list(BENCHES)
    work = Path(args.work or tempfile.mkdtemp(prefix="visionclip_perf_"))
    work.mkdir(parents=True, exist_ok=True)
    if args.dry_run:
        for name in names:
            present = (REPO / "bench" / BENCHES[name][0]).is_file()
            print(f"{name:10s} " + (" ".join(command(name, work / f"{name}.json")) if present
                                    else f"skipped: bench/{BENCHES[name][0]} not present"))
        return 0
    results = []
    for name in names:
        print(f"running {name} ...", flush=True)
        results.append(run_one(name, work, args.timeout))
        print(f"  {results[-1]['status']}" + (f" in {results[-1].get('seconds')} s" if "seconds" in results[-1] else ""))
    Path(args.out).write_text(render(results), encoding="utf-8")
    print(f"wrote {args.out} (logs and JSON in {work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
