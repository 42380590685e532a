"""Benchmark the app in a real browser (Debian chromium via Playwright); prints, does not assert.

  python -m bench.app [--runs 5] [--size 1024]

1. start-up: from spawning ``python launch.py`` to the server answering HTTP, and to the Analyse button being
   visible in a browser that was already running (target, issue 37: ready <= 5 s on 2 CPU cores);
2. Analyse press to results: a 1024 px synthetic photograph is uploaded once, then the Analyse button is pressed
   ``--runs`` times; each time is from the click to the status line reporting the new result, with the
   probabilities and the saliency overlay rendered (target, issue 37: <= 0.8 s). The first press is reported
   separately (it may include the model's warm-up), and the median of the rest.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.common import load_average, machine
from bench.common import free_port
from tests.local_server import CHROMIUM, CHROMIUM_ARGS, start_app, stop_app, wait_http


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--json", default=None, metavar="FILE", help="also write the figures to this JSON file")
    args = ap.parse_args(argv)
    if not Path(CHROMIUM).exists():
        print(f"{CHROMIUM} not found: apt-get install chromium")
        return 1
    from PIL import Image
    from playwright.sync_api import sync_playwright

    from engine.synth import render_fundus

    tmp = Path(tempfile.mkdtemp(prefix="visionclip_bench_"))
    photo = tmp / "fundus.jpg"
    Image.fromarray(render_fundus(123, args.size).image).save(photo, quality=92)
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto("about:blank")  # the browser's own start-up is not the app's
        t0 = time.perf_counter()
        proc = start_app(port, tmp / "bench.db", tmp / "app.log")
        try:
            try:
                wait_http(url, proc, timeout=180, poll=0.05)  # every 50 ms: the clock reads the app, not the poll
            except (RuntimeError, TimeoutError) as e:
                print((tmp / "app.log").read_text() + f"\n{e}")
                return 1
            serving = time.perf_counter() - t0
            page.goto(url, wait_until="load", timeout=60_000)
            page.wait_for_selector("#analyse-btn", state="visible", timeout=60_000)
            startup = time.perf_counter() - t0
            print(f"start-up to serving:           {serving:6.2f} s")
            print(f"start-up to first page:        {startup:6.2f} s   (target <= 5 s)")

            page.locator("#image-in input[type=file]").set_input_files(str(photo))
            page.wait_for_function("document.querySelector('#analyse-status').innerText.includes('classes in')",
                                   timeout=120_000)
            times = []
            for i in range(args.runs):
                # Watch the status line: the run is done once it has shown "processing" and then stopped.
                page.evaluate("""() => {
                    window.__sawProcessing = false;
                    const s = document.querySelector('#analyse-status');
                    if (window.__obs) window.__obs.disconnect();
                    window.__obs = new MutationObserver(() => {
                        if (s.innerText.includes('processing')) window.__sawProcessing = true; });
                    window.__obs.observe(s, {subtree: true, childList: true, characterData: true, attributes: true});
                }""")
                t = time.perf_counter()
                page.locator("#analyse-btn").click()
                page.wait_for_function(
                    "(() => { const s = document.querySelector('#analyse-status');"
                    " const o = document.querySelector('#overlay-out img');"
                    " return window.__sawProcessing && !s.innerText.includes('processing')"
                    " && s.innerText.includes('classes in') && o && o.complete && o.naturalWidth > 0; })()",
                    timeout=120_000, polling=20)
                times.append(time.perf_counter() - t)
            first, rest = times[0], times[1:] or times
            print(f"Analyse press to results:      first {first:5.2f} s, median of next {len(rest)}: "
                  f"{statistics.median(rest):5.2f} s (min {min(rest):.2f}, max {max(rest):.2f})   (target <= 0.8 s)")
            if args.json:
                import json
                Path(args.json).write_text(json.dumps({
                    "bench": "app", "serving_s": serving, "startup_s": startup, "analyse_first_s": first,
                    "analyse_median_s": statistics.median(rest), "runs": args.runs, "size": args.size,
                    "machine": machine(), "load_average": load_average()}, indent=2))
            print(f"photograph: {args.size}x{args.size} px JPEG; browser: {CHROMIUM} headless; "
                  f"{machine()}, load average {load_average()} at the end")
        finally:
            stop_app(proc)
            browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
