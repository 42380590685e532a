"""Which image-tower features carry what real photographs need: a logistic-regression probe per feature.

    python -m research.adapt_probe_features FEATURES [C,...] [FOLDER,...]
    python -m research.adapt_probe_features stage5 0.3,1 eyedisease_dev,palm_dev
    python -m research.adapt_probe_features stage4+stage5 0.3 eyedisease_dev

FEATURES: ``trunk`` (pooled 1280-d output before the projection), ``stage4``, ``stage5`` (pooled block
outputs), ``embeddings``, or several joined by ``+``; read from bench/adapt_cache.py --trunk's cache.
Same protocol as bench/adapt.py (support from one stratified half, scored on the other, 10 draws):
zero-shot, the probe (StandardScaler + class-balanced LogisticRegression(C)), and two training-free
mixes of the zero-shot log-probabilities with the probe's, ``zs + w * probe`` and ``(1 - w) * zs + w *
probe``, ``w = n / (n + kappa)``, n the fewest shots of a class. Exploratory: it chose the features
clap-stage reads (docs/adapters.md); eval photographs are used as the benchmark exception allows.
"""
from __future__ import annotations

import sys

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from bench.adapt import PROMPTS, balanced_accuracy, draw_support, split_halves
from bench.adapt_cache import DEFAULT_FOLDERS, load_or_encode_trunk
from engine import VisionCLIP, load_preset
from engine.adapt import TextAnchor

SHOTS = [1, 2, 4, 8, 16, "all"]


def log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


def main() -> None:
    which = sys.argv[1] if len(sys.argv) > 1 else "stage5"
    cs = [float(c) for c in sys.argv[2].split(",")] if len(sys.argv) > 2 else [0.3]
    names = sys.argv[3].split(",") if len(sys.argv) > 3 else [f.name for f in DEFAULT_FOLDERS]
    torch.set_num_threads(1)
    model = VisionCLIP.load()
    for folder in [f for f in DEFAULT_FOLDERS if f.name in names]:
        cached = load_or_encode_trunk(model, folder)
        ps = load_preset(PROMPTS[folder.name])
        classes = [ps.class_lookup(label) for label in cached["labels"]]
        ps = ps.subset(set(classes))
        y = np.array([ps.classes.index(c) for c in classes])
        feats = np.concatenate([np.asarray(cached[w], dtype=np.float64) for w in which.split("+")], 1)
        base = TextAnchor.from_model(model, ps).log_probs(torch.as_tensor(cached["embeddings"]).float()).numpy()
        res: dict = {}
        for r in range(10):
            rng = np.random.default_rng(r)
            pool, test = split_halves(y, rng)
            for k in SHOTS:
                sup = draw_support(y, pool, k, rng)

                def add(name, pred):
                    res.setdefault(name, {}).setdefault(str(k), []).append(balanced_accuracy(y[test], pred))

                add("zero-shot", base[test].argmax(1))
                scaler = StandardScaler().fit(feats[sup])
                n = np.bincount(y[sup], minlength=len(ps.classes)).min()
                for c in cs:
                    clf = LogisticRegression(C=c, class_weight="balanced", max_iter=2000).fit(scaler.transform(feats[sup]), y[sup])
                    logits = clf.decision_function(scaler.transform(feats[test]))
                    if logits.ndim == 1:
                        logits = np.stack([-logits / 2, logits / 2], 1)
                    add(f"probe C={c}", logits.argmax(1))
                    lp = log_softmax(logits)
                    for kappa in (1, 2, 4):
                        w = n / (n + kappa)
                        add(f"zs + w*probe C={c} kappa={kappa}", (base[test] + w * lp).argmax(1))
                        add(f"(1-w)*zs + w*probe C={c} kappa={kappa}", ((1 - w) * base[test] + w * lp).argmax(1))
        print(f"\n## {folder.name}, {which} {feats.shape}; balanced accuracy, mean ± sd over 10 draws, k = {SHOTS}")
        for name, ks in res.items():
            print(f"{name:38s} " + " ".join(f"{np.mean(v):.3f}±{np.std(v):.3f}" for v in ks.values()))


if __name__ == "__main__":
    main()
