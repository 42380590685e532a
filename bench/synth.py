"""Synthetic fundus renderer speed: images/second per core at 256, 512, 1024 px.

Usage: python bench/synth.py [--n 40] [--sizes 256 512 1024] [--workers 1]
"""
import argparse
import os
import sys
import time
from multiprocessing import get_context

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from engine.synth.render import render_fundus  # noqa: E402


def _batch(args):
    start, n, size = args
    for i in range(start, start + n):
        render_fundus(i, size)
    return n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=40, help="images per size (per worker)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    ap.add_argument("--workers", type=int, default=1)
    a = ap.parse_args()
    render_fundus(0, 128)  # warm-up
    for size in a.sizes:
        n = max(4, a.n if size <= 512 else a.n // 3)
        t = time.perf_counter()
        if a.workers == 1:
            _batch((1000, n, size))
        else:
            with get_context("fork").Pool(a.workers) as pool:
                pool.map(_batch, [(1000 + w * n, n, size) for w in range(a.workers)])
        dt = time.perf_counter() - t
        total = n * a.workers
        print(f"size {size:5d}: {total / dt:7.1f} img/s total, {total / dt / a.workers:7.1f} img/s per core "
              f"({a.workers} worker{'s' if a.workers > 1 else ''}, {total} images)")


if __name__ == "__main__":
    main()
