#!/usr/bin/env python
"""Throughput and peak memory of ``visionclip predict`` on a folder, with start-up excluded.

    python bench/predict.py DIR [--limit 400] [--batch-sizes 1 32] [--json out.json]
    PYTHONPATH=/path/to/other/checkout python bench/predict.py DIR   # the same on another version

Each batch size runs in a fresh process, as ``visionclip predict`` would (the CLI's model loading,
malloc settings included): the model is loaded and the screening preset encoded first (start-up), then
the clock runs over ``engine.batch.predict_files`` on every image file under DIR, or the first
``--limit`` of them in name order (building the frozen
image tower, where ``--runtime`` asks for it, included). Reports images/s by the
wall clock, CPU seconds per image (steadier than the wall clock on a shared machine), the process's
peak RSS, and the largest difference of any probability from batch size 1's (target <= 0.01).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

RUN_ONE = r"""
import json, sys, time
from engine.batch import expand_inputs, predict_files
from engine.cli import build_parser, load_model
from engine.prompts import load_prompt_set

folder, batch_size, runtime, limit = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
predict = build_parser()._subparsers._group_actions[0].choices["predict"]
runtime_known = any("--runtime" in a.option_strings for a in predict._actions)  # older checkouts have none
args = build_parser().parse_args(["predict", folder] + (["--runtime", runtime] if runtime_known else []))
runtime = runtime if runtime_known else "eager"
files = sorted(expand_inputs([folder], recursive=True).files)
files = files[:limit] if limit > 0 else files
prompts = load_prompt_set(None)
t0 = time.perf_counter()
model = load_model(args)
model.scored_embeddings(prompts)
startup = time.perf_counter() - t0
wall, cpu = time.perf_counter(), time.process_time()
results = list(predict_files(model, files, prompts, batch_size=batch_size))
wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
peak = int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) / 1024
print(json.dumps({"batch_size": batch_size, "runtime": runtime, "images": len(results), "startup_s": startup,
                  "images_per_s": len(results) / wall, "cpu_ms_per_image": 1000 * cpu / len(results),
                  "peak_rss_mb": peak, "probabilities": [r.get("probabilities") for r in results]}))
"""


def run(folder: str, batch_size: int, runtime: str, limit: int = 0) -> dict:
    out = subprocess.run([sys.executable, "-c", RUN_ONE, folder, str(batch_size), runtime, str(limit)], capture_output=True, text=True,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if out.returncode:
        raise SystemExit(f"batch size {batch_size} failed: {out.stderr[-400:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def max_difference(a: list, b: list) -> float:
    return max((abs(pa[c] - pb[c]) for pa, pb in zip(a, b) if pa and pb for c in pa), default=0.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--runtime", nargs="+", default=["auto"], help="predict --runtime values to run, each at every batch size")
    ap.add_argument("--limit", type=int, default=0, metavar="N", help="the first N image files (default: all)")
    ap.add_argument("--json", default=None, metavar="FILE", help="also write the figures to this JSON file")
    args = ap.parse_args()
    rows = [run(args.folder, b, r, args.limit) for r in args.runtime for b in args.batch_sizes]
    print(f"{'runtime':>7s} {'batch':>5s} {'images':>6s} {'start-up s':>10s} {'images/s':>9s} {'CPU ms/img':>10s} {'peak RSS MB':>11s} "
          f"{'max |dP| vs first':>17s}")
    for row in rows:
        row["max_dp_vs_first"] = max_difference(row["probabilities"], rows[0]["probabilities"])
        print(f"{row['runtime']:>7s} {row['batch_size']:5d} {row['images']:6d} {row['startup_s']:10.2f} {row['images_per_s']:9.1f} "
              f"{row['cpu_ms_per_image']:10.1f} {row['peak_rss_mb']:11.0f} {row['max_dp_vs_first']:17.2e}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump([{k: v for k, v in r.items() if k != "probabilities"} for r in rows], fh, indent=2)


if __name__ == "__main__":
    main()
