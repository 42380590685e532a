"""Inference speed and memory of the default model, with open_clip RN50 (random weights) as a peer.

    python bench/inference.py [--runs 20] [--device cpu|cuda]

Prints per-image latency at batch 1, network throughput at batch 32 (each model at its own input
size), the same through the frozen and the ONNX Runtime image towers (engine.image_runtime) where they
apply (the peer through the same runtime, so each ratio compares like with like), the image
tower's GFLOP an image and the GFLOP/s it achieves against the machine's measured float32 matmul
peak, the cost of a re-classify after editing one prompt (cached text embeddings), and the peak RSS
of a fresh process that loads the default model and classifies one image. Targets on 2 CPU cores:
network throughput at batch 32 >= 100 images/s and >= 3x RN50's, peak RSS < 1.5 GB.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path


import numpy as np
import torch
from PIL import Image

from engine import PromptSet, VisionCLIP, load_preset
from engine.image_runtime import onnx_available

RSS_SNIPPET = """
import sys
from engine import VisionCLIP, load_preset
from PIL import Image
import numpy as np
m = VisionCLIP.load()
m.classify([Image.fromarray(np.full((512, 512, 3), 120, np.uint8))], load_preset("screening"))
# VmHWM, not ru_maxrss: the latter survives exec and would report the parent's peak
print(int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) / 1024)
"""


def example_image() -> Image.Image:
    examples = sorted((Path(__file__).resolve().parent.parent / "assets" / "examples").glob("*.png"))
    if examples:
        return Image.open(examples[0]).convert("RGB")
    return Image.fromarray(np.random.default_rng(0).integers(0, 255, (512, 512, 3), dtype=np.uint8))


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, runs: int, device) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(runs):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        out.append(time.perf_counter() - t)
    return out


def matmul_peak_gflops(device, n: int = 2048, runs: int = 5) -> float:
    """float32 matmul GFLOP/s with torch's threads: the practical peak the network is held against."""
    a = torch.randn(n, n, device=device)
    return 2 * n**3 / statistics.median(timed(lambda: a @ a, runs, device)) / 1e9


def image_gflops(model: VisionCLIP) -> float:
    """GFLOP (2 per multiply-add) of one image through the image tower, counted by torch."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 3, model.image_size, model.image_size, device=model.device)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model.network.encode_image(x)
    return counter.get_total_flops() / 1e9


def fast_runtimes(device) -> list[str]:
    """The image runtimes besides eager that apply on ``device`` (engine.image_runtime)."""
    if device.type != "cpu":
        return []
    return ["frozen"] + (["onnx"] if onnx_available() else [])


def tower_under(model: VisionCLIP, runtime: str):
    model.image_runtime = runtime
    try:
        return model.image_tower_for(32)
    finally:
        model.image_runtime = "eager"


def measure(name: str, model: VisionCLIP, image: Image.Image, runs: int) -> dict:
    tensor = model.transform(image)
    batch32 = [tensor] * 32
    lat_e2e = timed(lambda: model.encode_images([image]), runs, model.device)
    lat_net = timed(lambda: model.encode_tensors([tensor]), runs, model.device)
    thr = timed(lambda: model.encode_tensors(batch32), max(3, runs // 4), model.device)
    fast = {}
    for runtime in fast_runtimes(model.device):
        tower = tower_under(model, runtime)
        fast[runtime] = timed(lambda: model.encode_tensors(batch32, tower), max(3, runs // 4), model.device)
    gflops = image_gflops(model)
    ps = load_preset("screening")
    model.classify([image], ps)
    edited = ps.to_dict()
    edited["glaucoma"] = edited["glaucoma"][:-1] + ["an edited glaucoma prompt, never seen before"]
    before = model.text_encodings
    t = time.perf_counter()
    model.classify([image], PromptSet(edited))
    recls = time.perf_counter() - t
    reencoded = model.text_encodings - before
    t = time.perf_counter()
    model.encode_texts(["another new prompt for timing one text encoding"])
    one_text = time.perf_counter() - t
    return {
        "model": name,
        "batch1_ms_end_to_end": 1000 * statistics.median(lat_e2e),
        "batch1_ms_network": 1000 * statistics.median(lat_net),
        "batch32_img_per_s": 32 / statistics.median(thr),
        **{f"batch32_img_per_s_{r}": 32 / statistics.median(t) for r, t in fast.items()},
        "image_size": model.image_size,
        "gflop_per_image": gflops,
        "achieved_gflop_per_s": gflops * 32 / min(statistics.median(t) for t in [thr, *fast.values()]),
        "reclassify_ms": 1000 * recls,
        "reclassify_text_encodings": reencoded,
        "one_text_encoding_ms": 1000 * one_text,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cpu, and cuda too when a GPU is present)")
    ap.add_argument("--json", default=None, metavar="FILE", help="also write the figures to this JSON file")
    args = ap.parse_args()
    figures = {"bench": "inference", "devices": {}}
    devices = [args.device] if args.device else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        figures["devices"][device] = report(device, args.runs)
    if "cpu" in devices:
        root = str(Path(__file__).resolve().parent.parent)
        out = subprocess.run([sys.executable, "-c", RSS_SNIPPET.format(root=root)], capture_output=True, text=True)
        rss = out.stdout.strip().splitlines()[-1] if out.returncode == 0 else f"failed: {out.stderr[-200:]}"
        print(f"peak RSS, load default + classify one image: {rss} MB (target < 1536)")
        figures["peak_rss_mb"] = float(rss) if rss.replace(".", "", 1).isdigit() else None
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


def report(device: str, runs: int) -> list[dict]:
    image = example_image()
    rows = []
    default = VisionCLIP.load(device=device)
    rows.append(measure(f"default ({default.model_id})", default, image, runs))
    rn50 = VisionCLIP.from_config("RN50", pretrained_towers=False, device=device)
    rows.append(measure("open_clip RN50 (random)", rn50, image, runs))
    peak = matmul_peak_gflops(default.device)
    print(f"device: {default.device}, torch threads: {torch.get_num_threads()}, float32 matmul peak {peak:.0f} GFLOP/s")
    for r in rows:
        r["share_of_matmul_peak"] = r["achieved_gflop_per_s"] / peak
    keys = list(rows[0])[1:]
    print(f"{'metric':28s}" + "".join(f"{r['model'][:34]:>36s}" for r in rows))
    for k in keys:
        print(f"{k:28s}" + "".join(f"{r[k]:36.4g}" for r in rows))
    print(f"ratio default/RN50 batch-1 latency: {rows[0]['batch1_ms_network'] / rows[1]['batch1_ms_network']:.2f}")
    print(f"ratio default/RN50 batch-32 throughput: {rows[0]['batch32_img_per_s'] / rows[1]['batch32_img_per_s']:.2f}"
          + "".join(f"; {r} towers: {rows[0][f'batch32_img_per_s_{r}'] / rows[1][f'batch32_img_per_s_{r}']:.2f}"
                    for r in fast_runtimes(default.device)))
    return rows


if __name__ == "__main__":
    main()
