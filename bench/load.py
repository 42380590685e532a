#!/usr/bin/env python
"""Load test of the VisionCLIP app: concurrent gradio_client users against a real ``python launch.py``.

    python -m bench.load                       # 8 clients x 50 rounds (the load target)
    python -m bench.load --clients 2 --rounds 2 --json out.json

Starts the app on 127.0.0.1 (a free port, a temporary case log), then each client repeats: analyse an
image, recompute the saliency map, save a review; every fifth round it also searches the Cases tab and
exports a CSV. Reports throughput, p50/p95/p99 latency per endpoint, failed requests, the exact number of
new cases (and revisions) against the number expected, and ``PRAGMA integrity_check``. ``--overload N``
then fires N analyses at once to show what the queue does beyond capacity (``launch.py --max-queue``).
Timings on a shared machine are noisy: compare runs made on the same machine.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


from bench.common import REPO, free_port, load_average, machine, percentile

# Endpoint names the app gives its events (branch `app`); the second and later names are the automatic
# names of older builds, found by discovery when the stable one is absent.
ENDPOINTS = {
    "analyse": ["/analyse", "/do_analyse"],
    "explain": ["/explain", "/do_saliency"],
    "save_review": ["/save_review", "/lambda"],
    "search_cases": ["/search_cases", "/partial"],  # functools.partial events in older builds, in wiring order
    "export_cases": ["/export_cases", "/partial_2"],
}
# Values by parameter name (synonyms included); a parameter not named here takes its default.
METHOD, TARGET = "gradcam", "softmax"


def start_app(db: Path, port: int, extra: list[str], timeout: float = 600) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen([sys.executable, str(REPO / "launch.py"), "--port", str(port), "--db", str(db), *extra],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True).start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("the app exited: " + "".join(lines)[-2000:])
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=5) as r:
                if r.status == 200:
                    return proc
        time.sleep(0.5)
    proc.kill()
    raise SystemExit("the app did not answer within the time limit")


def resolve_endpoints(api: dict) -> dict[str, str]:
    named = api["named_endpoints"]
    out = {}
    for key, candidates in ENDPOINTS.items():
        hit = next((c for c in candidates if c in named), None)
        if hit is None:
            raise SystemExit(f"no endpoint for {key} (tried {candidates}; the app has {sorted(named)})")
        out[key] = hit
    return out


def arguments(api: dict, endpoint: str, values: dict) -> list:
    """Positional arguments for ``endpoint``: by parameter name from ``values``, else by a key found in the
    component's label starts with (events wired to ``lambda *a`` have no names; the longest key wins), else
    the parameter default."""
    args = []
    for p in api["named_endpoints"][endpoint]["parameters"]:
        name, label = p.get("parameter_name") or "", (p.get("label") or "").lower()
        by_label = sorted((k for k in values if label.startswith(k)), key=len, reverse=True)
        if name in values:
            args.append(values[name])
        elif by_label:
            args.append(values[by_label[0]])
        elif p.get("parameter_has_default"):
            args.append(p.get("parameter_default"))
        else:
            args.append(None)
    return args


class Run:
    def __init__(self):
        self.lock = threading.Lock()
        self.latency: dict[str, list[float]] = {}
        self.failures: list[str] = []
        self.saved: list[int] = []

    def timed(self, kind: str, fn, *args):
        t0 = time.perf_counter()
        try:
            out = fn(*args)
        except Exception as e:  # a failed request, reported
            with self.lock:
                self.failures.append(f"{kind}: {type(e).__name__}: {' '.join(str(e).split())[:200]}")
            return None
        dt = time.perf_counter() - t0
        status = next((o for o in (out if isinstance(out, (list, tuple)) else [out]) if isinstance(o, str)
                       and o[:1] in ("✓", "⚠")), "")
        with self.lock:
            self.latency.setdefault(kind, []).append(dt)
            if status.startswith("⚠"):
                self.failures.append(f"{kind}: {status[:200]}")
        return out


def one_client(url, auth, api, eps, images, rounds, idx, run: Run):
    from gradio_client import Client, handle_file

    client = Client(url, auth=auth, verbose=False)
    table = {"headers": ["class", "prompt"], "data": [["normal", "a normal healthy fundus"],
                                                      ["glaucoma", "glaucoma, a large optic cup"],
                                                      ["diabetic retinopathy", "haemorrhages and exudates"]]}

    def call(kind, values):
        ep = eps[kind]
        return run.timed(kind, lambda: client.predict(*arguments(api, ep, values), api_name=ep))

    for r in range(rounds):
        img = images[(idx + r) % len(images)]
        out = call("analyse", {"image_path": handle_file(img), "image": handle_file(img), "table": table,
                               "prompt_table": table, "prompts": table, "method": METHOD, "opacity": 0.5,
                               "cls": None, "saliency_class": None, "target": TARGET, "detail": False})
        if out is None:
            continue
        call("explain", {"cls": "glaucoma", "class_name": "glaucoma", "saliency_class": "glaucoma", "method": METHOD,
                         "opacity": 0.6,
                         "target": TARGET, "detail": False})
        out = call("save_review", {"reviewer": f"load client {idx}", "verdict": "agree", "corrected": None,
                                   "confidence": 0.8, "notes": f"load test round {r}", "opt_in": False,
                                   "patient_id": "", "reviewer confidence": 0.8, "also store": False,
                                   "patient identifier": ""})
        status = out if isinstance(out, str) else next((o for o in (out or []) if isinstance(o, str)), "")
        if status.startswith("✓"):
            with run.lock:
                run.saved.append(idx)
        if r % 5 == 4 or r == rounds - 1:  # and once in short runs
            call("search_cases", {"reviewer": f"load client {idx}", "text": ""})
            call("export_cases", {"reviewer": f"load client {idx}"})


def overload(url, auth, api, eps, image: str, n: int, max_queue: int) -> dict:
    """Fire n analyses at once; count answers and refusals, how a refusal reads and how soon it comes.

    Beyond capacity the queue must refuse at once with a "queue is full" (busy) message, not leave the
    request waiting until a timeout: ``ok`` says all n were answered or refused so, refusals within seconds."""
    from gradio_client import Client, handle_file

    # one worker per request, else the client itself queues them and the server never sees n at once
    client = Client(url, auth=auth, verbose=False, max_workers=max(40, n))
    values = {"image_path": handle_file(image), "image": handle_file(image),
              "prompts": {"headers": ["class", "prompt"], "data": [["normal", "a normal fundus"], ["glaucoma", "glaucoma"]]},
              "method": METHOD, "opacity": 0.5, "saliency_class": None, "target": TARGET, "detail": False}
    t0 = time.perf_counter()
    done_at: dict[int, float] = {}  # each job's own finish time (the loop below reads them in order)
    jobs = []
    for i in range(n):
        jobs.append(client.submit(*arguments(api, eps["analyse"], values), api_name=eps["analyse"]))
        jobs[-1].future.add_done_callback(lambda _f, i=i: done_at.setdefault(i, time.perf_counter() - t0))
    answered, refused, other, messages = [], [], [], set()
    for i, j in enumerate(jobs):
        try:
            j.result(timeout=1800)
            answered.append(done_at.get(i, time.perf_counter() - t0))
        except Exception as e:
            msg = " ".join(str(e).split())[:160]
            busy = "queue is full" in msg.lower() or "busy" in msg.lower()
            (refused if busy else other).append(done_at.get(i, time.perf_counter() - t0))
            messages.add(msg)
    return {"submitted": n, "max_queue": max_queue, "answered": len(answered), "refused_busy": len(refused),
            "failed_otherwise": len(other), "refusal_messages": sorted(messages),
            "slowest_refusal_s": round(max(refused), 2) if refused else None,
            "last_answer_s": round(max(answered), 1) if answered else None,
            "ok": len(answered) + len(refused) == n and not other and (not refused or max(refused) < 30)}


def db_report(db: Path) -> dict:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return {"integrity_check": conn.execute("PRAGMA integrity_check").fetchone()[0],
                "cases": conn.execute("select count(*) from cases").fetchone()[0],
                "revisions": conn.execute("select count(*) from revisions").fetchone()[0]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--rounds", type=int, default=50)
    p.add_argument("--overload", type=int, default=0, metavar="N", help="then fire N analyses at once")
    p.add_argument("--max-queue", type=int, default=None, help="passed to launch.py --max-queue")
    p.add_argument("--model", default=None, help="checkpoint for launch.py --model")
    p.add_argument("--json", default=None, metavar="FILE", help="write the figures as JSON")
    args = p.parse_args(argv)
    from PIL import Image

    from engine.synth import render_fundus

    work = Path(tempfile.mkdtemp(prefix="visionclip_load_"))
    images = []
    for seed in range(4):
        images.append(str(work / f"fundus_{seed}.png"))
        Image.fromarray(render_fundus(seed, 512).image).save(images[-1])
    db, port = work / "cases.db", free_port()
    extra = (["--model", args.model] if args.model else []) + (
        ["--max-queue", str(args.max_queue)] if args.max_queue else [])
    t_start = time.perf_counter()
    app = start_app(db, port, extra)
    url, auth = f"http://127.0.0.1:{port}/", None
    try:
        startup_s = time.perf_counter() - t_start
        from gradio_client import Client

        api = Client(url, verbose=False).view_api(print_info=False, return_format="dict")
        eps = resolve_endpoints(api)
        before = db_report(db)
        run = Run()
        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            futures = [pool.submit(one_client, url, auth, api, eps, images, args.rounds, i, run)
                       for i in range(args.clients)]
            for f in futures:
                f.result()
        wall = time.perf_counter() - t0
        after = db_report(db)
        over = (overload(url, auth, api, eps, images[0], args.overload, args.max_queue or 64)
                if args.overload else None)
    finally:
        app.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            app.wait(timeout=30)
        if app.poll() is None:
            app.kill()
    expected = args.clients * args.rounds
    all_lat = [x for v in run.latency.values() for x in v]
    report = {
        "bench": "load", "clients": args.clients, "rounds": args.rounds, "endpoints": eps,
        "machine": machine(), "load_average": load_average(), "app_startup_s": round(startup_s, 1),
        "wall_s": round(wall, 1), "requests": len(all_lat) + len(run.failures),
        "throughput_rps": round(len(all_lat) / wall, 3) if wall else None,
        "saves_per_min": round(60 * len(run.saved) / wall, 2) if wall else None,
        "latency_s": {k: {"n": len(v), "p50": percentile(v, 50), "p95": percentile(v, 95), "p99": percentile(v, 99)}
                      for k, v in sorted(run.latency.items())},
        "latency_all_s": {"p50": percentile(all_lat, 50), "p95": percentile(all_lat, 95), "p99": percentile(all_lat, 99)},
        "failed_requests": len(run.failures), "failures": run.failures[:20],
        "new_cases": after["cases"] - before["cases"], "expected_new_cases": expected,
        "new_revisions": after["revisions"] - before["revisions"], "integrity_check": after["integrity_check"],
        "overload": over,
    }
    report["ok"] = (report["failed_requests"] == 0 and report["new_cases"] == expected
                    and report["new_revisions"] == expected and report["integrity_check"] == "ok"
                    and (over is None or over["ok"]))
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
