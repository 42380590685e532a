"""How much of a real folder's labels can be read from global colour and exposure alone?

    python -m research.source_cues [--eval-root ../shared/eval] [--folders eyedisease_dev palm_dev]

A diagnostic for the real evaluation folders, not a model: a logistic regression on nine statistics
of each photograph (mean and spread of R, G, B inside the field of view, the field's share of the
frame, the 5th and 95th luminance percentiles), scored by 5-fold stratified cross-validation on the
folder itself. When the classes of a folder come from different sources (cameras, clinics, upstream
data sets), these statistics separate them without any sign of disease; the figure is the part of a
real-trained probe's accuracy (the TSTR reference in `research/tstr.py --real-probe`) that renders
could only match by copying each source's camera look into the class, which they must not do.
Nothing here is trained for use: the folders stay evaluation only.
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, confusion_matrix
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

STATISTICS = ("mean R", "mean G", "mean B", "sd R", "sd G", "sd B", "field share", "luminance p5", "luminance p95")
from bench.common import EVAL_ROOT


def global_statistics(path: Path, side: int = 128) -> list[float]:
    a = np.asarray(Image.open(path).convert("RGB").resize((side, side)), np.float32) / 255
    field = a.max(-1) > 0.08  # the dark surround of a fundus photograph is not the field
    px = a[field] if field.any() else a.reshape(-1, 3)
    lum = px.mean(-1)
    return [*px.mean(0), *px.std(0), float(field.mean()), float(np.percentile(lum, 5)), float(np.percentile(lum, 95))]


def source_cue_accuracy(folder: Path, seed: int = 0) -> dict:
    rows = list(csv.DictReader((folder / "labels.csv").open(encoding="utf-8")))
    X = np.array([global_statistics(folder / r["path"]) for r in rows])
    y = np.array([r["label"] for r in rows])
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, class_weight="balanced"))
    pred = cross_val_predict(probe, X, y, cv=StratifiedKFold(5, shuffle=True, random_state=seed))
    classes = sorted(set(y))
    cm = confusion_matrix(y, pred, labels=classes)
    return {"folder": folder.name, "n": len(y), "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
            "classes": classes, "recall": [float(cm[i, i] / cm[i].sum()) for i in range(len(classes))],
            "confusion_matrix": cm.tolist()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--eval-root", default=str(EVAL_ROOT))
    ap.add_argument("--folders", nargs="+", default=["eyedisease_dev", "palm_dev"])
    args = ap.parse_args()
    print(f"logistic regression on {len(STATISTICS)} global statistics ({', '.join(STATISTICS)}), 5-fold CV")
    for name in args.folders:
        r = source_cue_accuracy(Path(args.eval_root) / name)
        recalls = ", ".join(f"{c} {v:.2f}" for c, v in zip(r["classes"], r["recall"]))
        print(f"{r['folder']} (n={r['n']}): balanced accuracy {r['balanced_accuracy']:.3f}; recall {recalls}")
        print("  confusion (rows true, columns predicted; " + ", ".join(r["classes"]) + "): " + str(r["confusion_matrix"]))


if __name__ == "__main__":
    main()
