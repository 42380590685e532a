#!/usr/bin/env python
"""Run every benchmark under bench/ with short settings and write PERFORMANCE.md in full (one table).

    python -m bench.run_all                 # all benches, then PERFORMANCE.md
    python -m bench.run_all --dry-run       # list what would run, run nothing
    python -m bench.run_all --only synth load --out /tmp/perf.md

Each bench writes its figures with ``--json FILE``; this script reads them and puts each figure beside its
target and, where the bench measured one in the same run, its peer (as a ratio). The commit, date, machine
(no host name or path) and the load average before and after head the report; nothing in the file is
written by hand, so a rerun replaces all of it. A bench that fails is listed with its exit status.
Figures from a loaded machine are noisy: run this on a quiet one, at a clean commit.
"""
from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import REPO, commit, load_average, machine, ratio


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
        for runtime in ("frozen", "onnx"):  # each against the peer through the same runtime
            key = f"batch32_img_per_s_{runtime}"
            if key in ours:
                out.append((f"{device}: batch-32 throughput, {runtime} tower", ours[key], "img/s", ">= 100, >= 3x peer",
                            f"{peer.get('model')}, {runtime}", peer.get(key), True))
        if ours.get("achieved_gflop_per_s") is not None:
            out.append((f"{device}: achieved GFLOP/s, fastest tower (share of the matmul peak)",
                        f"{ours['achieved_gflop_per_s']:.0f} ({ours.get('share_of_matmul_peak', 0):.2f})", "GFLOP/s", None,
                        None, None, True))
    if j.get("peak_rss_mb") is not None:
        out.append(("peak RSS, load + classify one image", j["peak_rss_mb"], "MB", "< 1536", None, None, False))
    return out


def rows_synth(j):
    return [(f"render {size} px, per core", v["img_per_s_per_core"], "img/s", None, None, None, True)
            for size, v in j.get("sizes", {}).items()]


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
    return [("start-up to serving", j.get("serving_s"), "s", None, None, None, False),
            ("start-up to first page", j.get("startup_s"), "s", "<= 5", None, None, False),
            ("Analyse press to results (median)", j.get("analyse_median_s"), "s", "<= 0.8", None, None, False)]


def _p(lat: dict) -> str:
    return " / ".join(f"{lat[k]:.2f}" if lat.get(k) is not None else "-" for k in ("p50", "p95", "p99"))


def rows_load(j):
    size = f"{j.get('clients')} clients x {j.get('rounds')} rounds"  # short and full runs differ: say which
    rows = [(f"{size}: throughput", j.get("throughput_rps"), "req/s", None, None, None, True),
            (f"{size}: reviews saved", j.get("saves_per_min"), "per min", None, None, None, True),
            (f"{size}: latency p50 / p95 / p99, all requests", _p(j.get("latency_all_s", {})), "s", None, None,
             None, False)]
    rows += [(f"{size}: {ep} p50 / p95 / p99", _p(lat), "s", None, None, None, False)
             for ep, lat in (j.get("latency_s") or {}).items()]
    rows += [(f"{size}: failed requests", j.get("failed_requests"), "", "0", None, None, False),
             (f"{size}: new cases / revisions (expected)",
              f"{j.get('new_cases')} / {j.get('new_revisions')} ({j.get('expected_new_cases')})", "", "equal",
              None, None, True),
             (f"{size}: integrity_check", j.get("integrity_check"), "", "ok", None, None, True)]
    over = j.get("overload")
    if over:
        rows.append((f"beyond capacity: {over['submitted']} analyses at once, --max-queue {over.get('max_queue')}",
                     f"{over['answered']} answered, {over.get('refused_busy')} refused busy, "
                     f"{over.get('failed_otherwise')} other; slowest refusal {over.get('slowest_refusal_s')} s",
                     "", "refused at once with a busy message, no timeout", None, None, True))
    return rows


def rows_adapt(j):
    """Few-shot adapters on the real dev folders (the named exception to evaluation-only): each method's
    balanced accuracy at its largest k, beside zero-shot on the same draws."""
    out = []
    for folder, entry in (j.get("folders") or {}).items():
        curves = entry.get("curves", {})
        zero = curves.get("zero-shot", {})
        for method, ks in curves.items():
            if method == "zero-shot" or not ks:
                continue
            k = list(ks)[-1]
            out.append((f"{folder}: {method}, k={k}, balanced accuracy", ks[k]["mean"], "", "> zero-shot",
                        "zero-shot", (zero.get(k) or {}).get("mean"), True))
    return out


def rows_predict(j):
    """``visionclip predict`` on real photographs: each batch size against batch 1 in the same run."""
    first = j[0] if j else {}
    out = []
    for r in j:
        out.append((f"predict, batch {r['batch_size']} ({r['runtime']}): {r['images']} real 400 px photographs",
                    r["images_per_s"], "img/s", ">= 80", "batch 1", first.get("images_per_s"), True))
        out.append((f"predict, batch {r['batch_size']}: peak RSS", r["peak_rss_mb"], "MB", "<= 1536", None, None, False))
    if len(j) > 1:
        out.append(("predict: max |dP| against batch 1", max(r.get("max_dp_vs_first", 0) for r in j), "", "<= 0.01",
                    None, None, False))
    return out


# name -> (module, short arguments, rows); the JSON path is appended as ``--json FILE``.
BENCHES = {
    "inference": ("bench.inference", ["--runs", "5"], rows_inference),
    "predict": ("bench.predict", ["../shared/eval/eyedisease_dev/dataset", "--limit", "400", "--batch-sizes", "1", "32"],  # cwd: the checkout
                rows_predict),
    "synth": ("bench.synth", ["--n", "8", "--sizes", "256", "512"], rows_synth),
    "saliency": ("bench.saliency", ["--n", "2", "--road", "0", "--sanity", "1", "--repeats", "2", "--skip-scorecam"],
                 rows_saliency),
    "train": ("bench.train", ["--steps", "2", "--warmup", "1", "--data-n", "32"], rows_train),
    "app": ("bench.app", ["--runs", "3"], rows_app),
    "load": ("bench.load", ["--clients", "8", "--rounds", "5"], rows_load),
    "adapt": ("bench.adapt", ["--draws", "2", "--shots", "4", "16", "--bootstrap", "200"], rows_adapt),
}
# --full-load: the load target's size (8 clients x 50 rounds, then 100 analyses at once against the default queue)
FULL_LOAD = ["--clients", "8", "--rounds", "50", "--overload", "100"]


def arguments(name: str, full_load: bool = False) -> list[str]:
    return FULL_LOAD if name == "load" and full_load else BENCHES[name][1]


def command(name: str, json_path: Path, full_load: bool = False) -> list[str]:
    return [sys.executable, "-m", BENCHES[name][0], *arguments(name, full_load), "--json", str(json_path)]


def present(name: str) -> bool:
    return importlib.util.find_spec(BENCHES[name][0]) is not None


def fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def render(results: list[dict], full_load: bool = False, load_before: float | None = None) -> str:
    regenerate = "python -m bench.run_all" + (" --full-load" if full_load else "")
    lines = ["# Performance", "",
             f"Written in full by `{regenerate}`; do not edit by hand (a rerun replaces the whole file).", "",
             f"- Commit: {commit()}",
             f"- Date (UTC): {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M')}",
             f"- Machine: {machine()}",
             f"- Load average (1 min): {load_before if load_before is not None else '-'} before, "
             f"{load_average() if load_average() is not None else '-'} after. Above the CPU count, absolute "
             "times are noisy; the ratios against a peer measured in the same run are the robust figures.",
             "- Each bench's own command is in the last column.", "",
             "| bench | figure | value | unit | target | peer (same run) | peer value | ratio | command |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        cmd = "`" + " ".join(["python", "-m", BENCHES[r["name"]][0], *arguments(r["name"], full_load)]) + "`"
        if r["status"] != "ok":
            lines.append(f"| {r['name']} | {r['status']} | - | - | - | - | - | - | {cmd} |")
            continue
        for fig, value, unit, target, peer, peer_value, hib in r["rows"] or [("(no figures)", None, "", None, None,
                                                                               None, True)]:
            lines.append(f"| {r['name']} | {fig} | {fmt(value)} | {unit} | {target or '-'} | {peer or '-'} | "
                         f"{fmt(peer_value)} | {ratio(value, peer_value, hib)} | {cmd} |")
    return "\n".join(lines) + "\n"


def run_one(name: str, work: Path, timeout: float, full_load: bool = False, reuse: bool = False) -> dict:
    out = work / f"{name}.json"
    if reuse and out.is_file():  # figures of an earlier run_all into the same --work folder
        return {"name": name, "status": "ok", "rows": BENCHES[name][2](json.loads(out.read_text())), "reused": True}
    if not present(name):
        return {"name": name, "status": f"skipped: {BENCHES[name][0]} not present", "rows": []}
    out.unlink(missing_ok=True)  # a failed run must not show an earlier run's figures
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(command(name, out, full_load), cwd=REPO, capture_output=True, text=True, timeout=timeout)
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
    p.add_argument("--reuse", action="store_true",
                   help="keep the figures of benches whose JSON is already in --work (rerun only the others)")
    p.add_argument("--full-load", action="store_true",
                   help="run the load bench at full size (8 clients x 50 rounds, then --overload 100) instead of 8 x 5")
    args = p.parse_args(argv)
    names = args.only or list(BENCHES)
    work = Path(args.work or tempfile.mkdtemp(prefix="visionclip_perf_"))
    work.mkdir(parents=True, exist_ok=True)
    if args.dry_run:
        for name in names:
            print(f"{name:10s} " + (" ".join(command(name, work / f"{name}.json", args.full_load)) if present(name)
                                    else f"skipped: {BENCHES[name][0]} not present"))
        return 0
    load_before = load_average()
    results = []
    for name in names:
        print(f"running {name} ...", flush=True)
        results.append(run_one(name, work, args.timeout, args.full_load, args.reuse))
        print(f"  {results[-1]['status']}" + (f" in {results[-1].get('seconds')} s" if "seconds" in results[-1] else ""))
    Path(args.out).write_text(render(results, args.full_load, load_before), encoding="utf-8")
    print(f"wrote {args.out} (logs and JSON in {work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
