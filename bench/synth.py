"""Synthetic fundus renderer speed: images/second per core at 256, 512, 1024 px.

Per core = images / CPU seconds used (robust on a shared machine); wall-clock throughput is also printed.
Each size is measured twice in the same run: render only, then as written by `visionclip synth`
(`generate_dataset`: images, masks, labels.csv; process start excluded), with the write/render ratio
and where the writer's time per image goes.

Usage: python bench/synth.py [--n 40] [--sizes 256 512 1024] [--workers 1]
       python bench/synth.py --gallery   # writes docs/synthetic_gallery.png
       python bench/synth.py --examples  # writes the app's examples, assets/examples/ (+ captions.json)
"""
import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
import resource
import sys
import time
from multiprocessing import get_context


from engine.synth.render import render_fundus


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
    ap.add_argument("--json", default=None, metavar="FILE", help="also write the figures to this JSON file")
    a = ap.parse_args()
    figures = {"bench": "synth", "workers": a.workers, "sizes": {}}
    render_fundus(0, 128)  # warm-up
    for size in a.sizes:
        n = max(4, a.n if size <= 512 else a.n // 3)
        t = time.perf_counter()
        c0 = time.process_time()
        ch0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        if a.workers == 1:
            _batch((1000, n, size))
        else:
            with get_context("fork").Pool(a.workers) as pool:
                pool.map(_batch, [(1000 + w * n, n, size) for w in range(a.workers)])
        dt = time.perf_counter() - t
        ch1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = time.process_time() - c0 + (ch1.ru_utime + ch1.ru_stime) - (ch0.ru_utime + ch0.ru_stime)
        total = n * a.workers
        print(f"size {size:5d}: {total / cpu:7.1f} img/s per core (CPU time), {total / dt:7.1f} img/s wall total "
              f"({a.workers} worker{'s' if a.workers > 1 else ''}, {total} images)")
        written = write_speed(total, size, a.workers, render_per_core=total / cpu)
        figures["sizes"][str(size)] = {"img_per_s_per_core": total / cpu, "img_per_s_wall": total / dt, "images": total,
                                       "written_per_s_per_core": written}
    if a.json:
        import json
        with open(a.json, "w") as fh:
            json.dump(figures, fh, indent=2)




def gallery(path="docs/synthetic_gallery.png", size=160, cols=6):
    """One labelled row per condition, columns spread over seeds (and so over image quality)."""
    from PIL import Image, ImageDraw

    rows = [("normal", ["normal"]), ("DR mild", ["dr1"]), ("DR moderate", ["dr2"]), ("DR severe", ["dr3"]),
            ("DR proliferative", ["dr4"]), ("DME", ["dme"]), ("AMD", ["amd"]), ("glaucoma", ["glaucoma"]),
            ("pathologic myopia", ["pathologic_myopia"]), ("hypertensive", ["hypertensive_retinopathy"]),
            ("RVO", ["rvo"]), ("ERM", ["erm"]), ("optic atrophy", ["optic_atrophy"]), ("cataract", ["cataract"])]
    lw = 150
    canvas = Image.new("RGB", (lw + cols * size, len(rows) * size), (255, 255, 255))
    d = ImageDraw.Draw(canvas)
    for r, (name, cond) in enumerate(rows):
        d.text((8, r * size + size // 2 - 6), name, fill=(0, 0, 0))
        for c in range(cols):
            s = render_fundus(100 + c * 7 + r, size, cond)
            canvas.paste(Image.fromarray(s.image), (lw + c * size, r * size))
            d.text((lw + c * size + 4, r * size + size - 14), s.labels["quality_grade"], fill=(255, 255, 255))
    canvas.save(path, compress_level=9)
    return path


def _cpu_seconds() -> float:
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + ch.ru_utime + ch.ru_stime


def write_speed(n, size, workers=1, render_per_core=None):
    """Images/s as written by generate_dataset (what `visionclip synth` runs), and the writer's time per stage."""
    import io
    import tempfile

    import numpy as np
    from PIL import Image

    from engine.synth.captions import build_caption
    from engine.synth.schema import to_file_row
    from engine.synth.writer import PNG_OPTIONS, generate_dataset, masks_npz_bytes

    with tempfile.TemporaryDirectory() as tmp:
        t, c0 = time.perf_counter(), _cpu_seconds()
        generate_dataset(os.path.join(tmp, "out"), n, seed=1000, size=size, workers=workers, progress=False)
        dt, cpu = time.perf_counter() - t, _cpu_seconds() - c0
    written_per_core = n / cpu
    ratio = f", {written_per_core / render_per_core:.2f}x render-only" if render_per_core else ""
    print(f"           {n / cpu:7.1f} img/s per core as written, {n / dt:7.1f} img/s wall total{ratio}")
    stages = dict.fromkeys(("render", "png", "masks", "caption+row"), 0.0)
    for i in range(min(n, 12)):
        c = time.process_time()
        s = render_fundus(2000 + i, size)
        stages["render"] += time.process_time() - c
        c = time.process_time()
        Image.fromarray(s.image).save(io.BytesIO(), "PNG", **PNG_OPTIONS)
        stages["png"] += time.process_time() - c
        c = time.process_time()
        masks_npz_bytes(s.masks)
        stages["masks"] += time.process_time() - c
        c = time.process_time()
        to_file_row(s.labels, build_caption(s.labels, s.findings, np.random.default_rng(i)), s.findings)
        stages["caption+row"] += time.process_time() - c
    k = min(n, 12)
    print("           per image (ms): " + ", ".join(f"{name} {1000 * v / k:.1f}" for name, v in stages.items()))
    return written_per_core


EXAMPLES = [("normal", 11), ("dr", 12), ("glaucoma", 13), ("amd", 14), ("cataract", 15), ("hypertensive_retinopathy", 16)]


def examples(out="assets/examples", size=512):
    """The app's synthetic examples (one per condition, fixed seeds) with the captions they were rendered with."""
    import json

    import numpy as np
    from PIL import Image

    from engine.synth import build_caption
    from engine.synth.benchmark import condition_class

    captions = {}
    for cond, seed in EXAMPLES:
        s = render_fundus(seed, size, [cond])
        name = f"synthetic_{cond}_{seed}.png"
        Image.fromarray(s.image).save(os.path.join(out, name), compress_level=9)
        caption = build_caption(s.labels, s.findings, np.random.default_rng(seed))
        captions[name] = f"{condition_class(cond)}: {caption}"
    with open(os.path.join(out, "captions.json"), "w", encoding="utf-8") as f:
        json.dump(captions, f, indent=1, ensure_ascii=False)
    return out


if __name__ == "__main__":
    if "--gallery" in sys.argv:
        print(gallery())
    elif "--examples" in sys.argv:
        print(examples())
    else:
        main()
