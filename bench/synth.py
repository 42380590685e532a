"""Synthetic fundus renderer speed: images/second per core at 256, 512, 1024 px.

Per core = images / CPU seconds used (robust on a shared machine); wall-clock throughput is also printed.
Each size is measured twice in the same run: render only, then as written by `visionclip synth`
(`generate_dataset`: images, masks, labels.csv; process start excluded), with the write/render ratio
and where the writer's time per image goes.

On a shared machine use --repeat 3: each figure is then the best of 3 runs (other jobs only ever slow a run down).

Usage: python -m bench.synth [--n 40] [--sizes 256 512 1024] [--workers 1] [--pipeline v1|v2] [--repeat 1] [--layers]
       python -m bench.synth --gallery   # writes docs/synthetic_gallery.png (v1 and v2 side by side)
       python -m bench.synth --discs     # writes docs/disc_crops.png (real disc crops beside synthetic ones)
       python -m bench.synth --macula    # writes docs/macula_crops.png (real DR macular crops beside synthetic ones)
       python -m bench.synth --examples  # writes the app's examples, assets/examples/ (+ captions.json)
"""
import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
import resource
import sys
import time
from multiprocessing import get_context


from engine.preprocess import disc_centre, square_crop
from engine.synth.render import render_fundus


def _batch(args):
    start, n, size, pipeline = args
    for i in range(start, start + n):
        render_fundus(i, size, None, pipeline)
    return n


def layer_times(n, size, pipeline):
    """CPU milliseconds per image spent in each layer (the default condition mix)."""
    from collections import Counter

    from engine.synth.canvas import Canvas
    from engine.synth.case import sample_case
    from engine.synth.eye import Eye
    from engine.synth.pipeline import get_pipeline

    pipe = get_pipeline(pipeline)
    tt = Counter()
    for seed in range(1000, 1000 + n):
        case = sample_case(seed, size, [], pipe.case)
        eye, canvas = Eye(case, case.rng("eye")), Canvas(size)
        for layer in pipe.build():
            t = time.process_time()
            if layer.applies(case):
                layer.draw(eye, canvas, case.rng(layer.name))
            tt[layer.name] += time.process_time() - t
    for name, sec in tt.most_common():
        print(f"  {name:24s} {1000 * sec / n:6.2f} ms")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=40, help="images per size (per worker)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--json", default=None, metavar="FILE", help="also write the figures to this JSON file")
    ap.add_argument("--pipeline", default="v1", help="renderer pipeline (default v1)")
    ap.add_argument("--layers", action="store_true", help="also print CPU time per layer")
    ap.add_argument("--repeat", type=int, default=1, help="measure each figure this many times and keep the best")
    a = ap.parse_args()
    figures = {"bench": "synth", "workers": a.workers, "pipeline": a.pipeline, "sizes": {}}
    from engine.synth.writer import keep_freed_buffers

    keep_freed_buffers()  # as `visionclip synth` does, so render-only and written figures compare like with like
    render_fundus(0, 128, None, a.pipeline)  # warm-up
    for size in a.sizes:
        n = max(4, a.n if size <= 512 else a.n // 3)
        cpu = dt = float("inf")
        for _ in range(max(1, a.repeat)):
            t, c0 = time.perf_counter(), _cpu_seconds()
            if a.workers == 1:
                _batch((1000, n, size, a.pipeline))
            else:
                with get_context("fork").Pool(a.workers) as pool:
                    pool.map(_batch, [(1000 + w * n, n, size, a.pipeline) for w in range(a.workers)])
            dt, cpu = min(dt, time.perf_counter() - t), min(cpu, _cpu_seconds() - c0)
        total = n * a.workers
        print(f"{a.pipeline} size {size:5d}: {total / cpu:7.1f} img/s per core (CPU time), {total / dt:7.1f} img/s wall total "
              f"({a.workers} worker{'s' if a.workers > 1 else ''}, {total} images)")
        written = write_speed(total, size, a.workers, render_per_core=total / cpu, pipeline=a.pipeline, repeat=a.repeat)
        figures["sizes"][str(size)] = {"img_per_s_per_core": total / cpu, "img_per_s_wall": total / dt, "images": total,
                                       "written_per_s_per_core": written}
        if a.layers:
            layer_times(n, size, a.pipeline)
    if a.json:
        import json

        from bench.common import load_average, machine
        with open(a.json, "w") as fh:
            json.dump({**figures, "machine": machine(), "load_average": load_average()}, fh, indent=2)




def gallery(path="docs/synthetic_gallery.png", size=160, cols=4, pipelines=("v1", "v2")):
    """One labelled row per condition; for each pipeline, ``cols`` columns spread over seeds (and so over
    image quality). The same seeds in each pipeline block: what differs is what the pipeline changed."""
    from PIL import Image, ImageDraw

    rows = [("normal", ["normal"]), ("DR mild", ["dr1"]), ("DR moderate", ["dr2"]), ("DR severe", ["dr3"]),
            ("DR proliferative", ["dr4"]), ("DME", ["dme"]), ("AMD", ["amd"]), ("glaucoma", ["glaucoma"]),
            ("pathologic myopia", ["pathologic_myopia"]), ("hypertensive", ["hypertensive_retinopathy"]),
            ("RVO", ["rvo"]), ("ERM", ["erm"]), ("optic atrophy", ["optic_atrophy"]), ("cataract", ["cataract"]),
            ("CSC", ["csc"])]
    lw, gap, top = 150, 12, 20
    block = cols * size + gap
    canvas = Image.new("RGB", (lw + len(pipelines) * block, top + len(rows) * size), (255, 255, 255))
    d = ImageDraw.Draw(canvas)
    for b, pipe in enumerate(pipelines):
        d.text((lw + b * block + 4, 4), f"pipeline {pipe}", fill=(0, 0, 0))
    for r, (name, cond) in enumerate(rows):
        d.text((8, top + r * size + size // 2 - 6), name, fill=(0, 0, 0))
        for b, pipe in enumerate(pipelines):
            for c in range(cols):
                s = render_fundus(100 + c * 7 + r, size, cond, pipe)
                x, y = lw + b * block + c * size, top + r * size
                canvas.paste(Image.fromarray(s.image), (x, y))
                d.text((x + 4, y + size - 14), s.labels["quality_grade"], fill=(255, 255, 255))
    # a 256-colour palette keeps the figure under 1 MB in the repository; the look is unchanged at this scale
    canvas.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    return path


def _cpu_seconds() -> float:
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + ch.ru_utime + ch.ru_stime


def write_speed(n, size, workers=1, render_per_core=None, pipeline=None, repeat=1):
    """Images/s as written by generate_dataset (what `visionclip synth` runs), and the writer's time per stage."""
    import tempfile

    import numpy as np

    from engine.synth.captions import build_caption
    from engine.synth.schema import to_file_row
    from engine.synth.writer import generate_dataset, masks_npz_bytes, png_bytes

    cpu = dt = float("inf")
    for _ in range(max(1, repeat)):
        with tempfile.TemporaryDirectory() as tmp:
            t, c0 = time.perf_counter(), _cpu_seconds()
            generate_dataset(os.path.join(tmp, "out"), n, seed=1000, size=size, workers=workers, progress=False,
                             pipeline=pipeline)
            dt, cpu = min(dt, time.perf_counter() - t), min(cpu, _cpu_seconds() - c0)
    written_per_core = n / cpu
    ratio = f", {written_per_core / render_per_core:.2f}x render-only" if render_per_core else ""
    print(f"           {n / cpu:7.1f} img/s per core as written, {n / dt:7.1f} img/s wall total{ratio}")
    stages = dict.fromkeys(("render", "png", "masks", "caption+row"), 0.0)
    for i in range(min(n, 12)):
        c = time.process_time()
        s = render_fundus(2000 + i, size, None, pipeline)
        stages["render"] += time.process_time() - c
        c = time.process_time()
        png_bytes(s.image)
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


def _disc_crop(img, frac=0.3, out=120):
    """Crop round the optic disc, same rule for real and synthetic images so both are seen at the same scale."""
    return square_crop(img, *disc_centre(img), frac, out)


def _fovea_centre(img):
    """(y, x) of the darkest blurred spot in the middle of the field, 0.2-0.5 image widths from the disc
    and within 35 degrees of its horizontal: the fovea, found by the same rule in real and synthetic images."""
    import cv2
    import numpy as np

    h, w = img.shape[:2]
    lum = cv2.GaussianBlur(img.astype(np.float32).mean(axis=2), (0, 0), max(2.0, w / 40))
    lit = lum > max(8.0, 0.35 * float(np.median(lum[lum > 8])) if (lum > 8).any() else 8.0)
    ys, xs = np.nonzero(lit)
    cy, cx = (ys.mean(), xs.mean()) if ys.size else (h / 2, w / 2)
    dy, dx = disc_centre(img)
    yy, xx = np.mgrid[0:h, 0:w]
    dist = np.hypot(yy - dy, xx - dx)
    ok = lit & (np.hypot(yy - cy, xx - cx) < 0.28 * w) & (dist > 0.2 * w) & (dist < 0.5 * w) & \
        (np.abs(yy - dy) < np.tan(np.radians(35)) * np.abs(xx - dx))
    if not ok.any():
        return int(cy), int(cx)
    return np.unravel_index(int(np.where(ok, lum, np.inf).argmin()), lum.shape)


def macula_sheet(path="docs/macula_crops.png", real="../shared/eval/eyedisease_dev", n=8, size=400,
                 pipelines=("v1", "v2"), frac=0.34):
    """Macular crops, real diabetic retinopathy photographs beside synthetic DR renders (each pipeline's
    own DR grade mix) and real normals, at the same scale: every image resized to ``size`` px, cropped
    round its fovea by one rule, tiles at native scale (no resampling). Real photographs are only looked
    at (a fixed random draw), nothing is fitted to them."""
    import random

    import numpy as np
    from PIL import Image, ImageDraw

    from engine.evaluate import read_labels
    from engine.preprocess import load_image

    rows = read_labels(real)

    def real_tiles(label, k, seed):
        paths = random.Random(seed).sample([p for p, lab in rows if lab == label], k)
        ims = [np.asarray(load_image(p).convert("RGB").resize((size, size), Image.BICUBIC)) for p in paths]
        return [square_crop(im, *_fovea_centre(im), frac, None) for im in ims]

    def syn_tiles(pipe, k):
        ims = [render_fundus(500 + i, size, ["dr"], pipe).image for i in range(k)]
        return [square_crop(im, *_fovea_centre(im), frac, None) for im in ims]

    dr = real_tiles("diabetic retinopathy", 2 * n, 2024)
    sheet_rows = [("real normal", real_tiles("normal", n, 2024)), ("real DR", dr[:n]), ("real DR", dr[n:])]
    for pipe in pipelines:
        t = syn_tiles(pipe, 2 * n)
        sheet_rows += [(f"{pipe} DR", t[:n]), (f"{pipe} DR", t[n:])]
    t = sheet_rows[0][1][0].shape[0]
    lw = 100
    sheet = Image.new("RGB", (lw + n * t, len(sheet_rows) * t), (255, 255, 255))
    d = ImageDraw.Draw(sheet)
    for r, (name, row) in enumerate(sheet_rows):
        d.text((6, r * t + t // 2 - 6), name, fill=(0, 0, 0))
        for c, tile in enumerate(row):
            sheet.paste(Image.fromarray(tile), (lw + c * t, r * t))
    sheet.save(path, optimize=True)  # full colour (~0.65 MB): a palette would band the renders' gradients
    return path


def disc_sheet(path="docs/disc_crops.png", real="../shared/eval/eyedisease_dev", n=8, size=400, pipelines=("v1", "v2")):
    """Real disc crops beside synthetic ones (normal and glaucoma), same crop rule and scale. The real
    photographs are only looked at (a fixed random draw), nothing is fitted to them."""
    import random

    import numpy as np
    from PIL import Image, ImageDraw

    from engine.evaluate import read_labels
    from engine.preprocess import load_image

    rows = read_labels(real)
    tiles, names = [], []
    for label, cond in (("normal", "normal"), ("glaucoma", "glaucoma")):
        paths = random.Random(2024).sample([p for p, lab in rows if lab == label], n)
        tiles.append([_disc_crop(np.asarray(load_image(p).convert("RGB").resize((size, size)))) for p in paths])
        names.append(f"real {label}")
        for pipe in pipelines:
            tiles.append([_disc_crop(render_fundus(500 + i, size, [cond], pipe).image) for i in range(n)])
            names.append(f"{pipe} {label}")
    t = tiles[0][0].shape[0]
    lw = 110
    sheet = Image.new("RGB", (lw + n * t, len(tiles) * t), (255, 255, 255))
    d = ImageDraw.Draw(sheet)
    for r, (row, name) in enumerate(zip(tiles, names)):
        d.text((6, r * t + t // 2 - 6), name, fill=(0, 0, 0))
        for c, tile in enumerate(row):
            sheet.paste(Image.fromarray(tile), (lw + c * t, r * t))
    sheet.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    return path


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
    elif "--discs" in sys.argv:
        print(disc_sheet())
    elif "--macula" in sys.argv:
        print(macula_sheet())
    elif "--examples" in sys.argv:
        print(examples())
    else:
        main()
