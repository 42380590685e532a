"""Train on synthetic, test on real (TSTR): what the renders teach a plain classifier.

A logistic regression (standardised features) is fitted on frozen ImageNet EfficientNet-Lite0
features of renders of each class and scored on real dev photographs. It is isolated from CLIP
training, so it takes minutes and can steer every renderer change (issue 20, part 4).

Tasks:
  eyedisease: normal, diabetic retinopathy, glaucoma, cataract on ../shared/eval/eyedisease_dev
              (balanced accuracy, per-class recall, confusion matrix)
  palm:       pathologic myopia vs normal on ../shared/eval/palm_dev (adds ROC AUC)
--real-probe adds the reference: the same probe trained on the real dev photographs, 5-fold
stratified cross-validation (what the renders would have to teach to match real training).

Usage (repo root, PYTHONPATH=.):
  python -m research.tstr [--n-per-class 200] [--size 320] [--feature-size 224] [--real-probe]
                       [--tasks eyedisease,palm] [--pipeline NAME] [--json OUT]
Real photographs are only looked at: their features are cached under data/tstr_features/
(keyed by file hash and feature size) and nothing but the --real-probe reference is fitted to them.

Figures of 2026-12-03 for the single-function renderer (`python -m research.tstr --real-probe`, defaults;
3.4 CPU-minutes in all): eyedisease TSTR balanced accuracy 0.396 (recall normal 0.28, DR 0.27,
glaucoma 0.38, cataract 0.66), real 5-fold reference 0.675; palm TSTR AUC 0.834 (BA 0.554, myopia
recall 0.11), real reference AUC 1.000.
"""
from __future__ import annotations

import argparse
import csv
import functools
import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np

from bench.common import EVAL_ROOT as EVAL_DIR, REPO

TASKS = {
    "eyedisease": {"folder": EVAL_DIR / "eyedisease_dev",
                   "classes": ["normal", "diabetic retinopathy", "glaucoma", "cataract"]},
    "palm": {"folder": EVAL_DIR / "palm_dev", "classes": ["normal", "pathologic myopia"], "positive": "pathologic myopia"},
    # glaucoma against normal alone: with --view disc, what the renders' discs teach
    "glaucoma": {"folder": EVAL_DIR / "eyedisease_dev", "classes": ["normal", "glaucoma"], "positive": "glaucoma"},
}
DISC_VIEW = {"field_px": 400, "fraction": 0.3, "out_px": 160}  # the rule of docs/disc_crops.png
CACHE_DIR = REPO / "data" / "tstr_features"
FEATURE_VERSION = "effl0-imagenet-fundustransform-v1"  # bump when the feature recipe changes


# ------------------------------------------------------------------------------ features
@functools.lru_cache(maxsize=1)
def load_feature_net():
    """Frozen ImageNet EfficientNet-Lite0 trunk (timm, global average pooled), as the model factory loads it."""
    from types import SimpleNamespace

    import timm

    from engine.factory import _load_timm_imagenet_weights, load_model_config

    ref = load_model_config("visionclip-effl0-minilm")["initial_weights"]["image"]
    net = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=0)
    _load_timm_imagenet_weights(SimpleNamespace(visual=SimpleNamespace(trunk=net)), ref)
    return net.eval()


def make_transform(feature_size: int, crop: bool = True):
    """The fundus preprocessing real photographs get everywhere (crop to the disc, pad, resize, ImageNet norm).

    crop=False pads the whole frame instead: the camera's framing then tells the real sources (and so
    the classes) apart, which lifts the real-trained reference (0.73 instead of 0.68 by 5-fold CV on
    eyedisease_dev, 2026-12-03) without saying anything about the fundus."""
    from engine.preprocess import FundusTransform

    return FundusTransform(image_size=feature_size, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), crop=crop)


def extract_features(net, transform, images, batch_size: int = 32) -> np.ndarray:
    """Pooled features (N, 1280) of images (paths, PIL images or uint8 arrays)."""
    import torch

    out = []
    with torch.inference_mode():
        for i in range(0, len(images), batch_size):
            batch = torch.stack([transform(im) for im in images[i:i + batch_size]])
            out.append(net(batch).numpy())
    return np.concatenate(out).astype(np.float64) if out else np.zeros((0, net.num_features))


def disc_view(image) -> np.ndarray:
    """The optic disc region of a photograph or render: the fundus cropped to its box, resized to a
    common field size, then a square round the disc (one rule for real and synthetic images)."""
    from PIL import Image

    from engine.preprocess import disc_centre, fundus_box, load_image, square_crop

    img = image if isinstance(image, Image.Image) else (Image.fromarray(image) if isinstance(image, np.ndarray) else load_image(image))
    rgb = np.asarray(img.convert("RGB"))
    left, top, right, bottom = fundus_box(rgb)
    side = DISC_VIEW["field_px"]
    field = np.asarray(Image.fromarray(rgb[top:bottom, left:right]).resize((side, side), Image.BILINEAR))
    return square_crop(field, *disc_centre(field), DISC_VIEW["fraction"], DISC_VIEW["out_px"])


def _file_key(path: Path, feature_size: int, crop: bool = True, view: str = "fundus") -> str:
    h = hashlib.sha1(path.read_bytes()).hexdigest()
    return f"{FEATURE_VERSION}-{feature_size}{'' if crop else '-nocrop'}{'' if view == 'fundus' else '-' + view}-{h}"


def real_features(net, transform, paths: list[Path], feature_size: int, cache_dir: Path | None = CACHE_DIR,
                  view: str = "fundus") -> np.ndarray:
    """Features of real photographs, computed once per file content and cached as .npy under cache_dir."""
    keys = [_file_key(p, feature_size, getattr(transform, "crop", True), view) for p in paths]
    feats: list = [None] * len(paths)
    todo = []
    for i, k in enumerate(keys):
        f = cache_dir / f"{k}.npy" if cache_dir else None
        if f is not None and f.is_file():
            feats[i] = np.load(f)
        else:
            todo.append(i)
    if todo:
        images = [paths[i] for i in todo]
        new = extract_features(net, transform, [disc_view(p) for p in images] if view == "disc" else images)
        for i, v in zip(todo, new):
            feats[i] = v
            if cache_dir:
                cache_dir.mkdir(parents=True, exist_ok=True)
                tmp = cache_dir / f"{keys[i]}.tmp.npy"
                np.save(tmp, v)
                os.replace(tmp, cache_dir / f"{keys[i]}.npy")
    return np.stack(feats) if feats else np.zeros((0, net.num_features))


def read_real_folder(folder: Path, classes: list[str]) -> tuple[list[Path], np.ndarray]:
    """(paths, class indices) from folder/labels.csv (columns path,label); rows of other labels are skipped."""
    labels_csv = Path(folder) / "labels.csv"
    if not labels_csv.is_file():
        raise SystemExit(f"tstr: error: {labels_csv} not found")
    paths, ys = [], []
    with open(labels_csv, newline="") as fh:
        for row in csv.DictReader(fh):
            label = row["label"].strip().lower()
            if label in classes:
                paths.append(Path(folder) / row["path"])
                ys.append(classes.index(label))
    return paths, np.array(ys, dtype=int)


# ------------------------------------------------------------------------------ renders
def render_images(classes: list[str], n_per_class: int, size: int, seed: int = 0, pipeline: str | None = None):
    """n_per_class renders per class (class names as in the real labels), as uint8 arrays, and class indices."""
    from engine.synth.render import render_fundus
    from engine.synth.schema import parse_condition

    kwargs = {"pipeline": pipeline} if pipeline else {}  # only renderers that know pipelines get the kwarg
    images, ys = [], []
    for ci, name in enumerate(classes):
        key, _ = parse_condition(name)
        for i in range(n_per_class):
            s = seed + ci * 1_000_003 + i  # disjoint seeds per class
            images.append(render_fundus(seed=s, size=size, conditions=[key], **kwargs).image)
            ys.append(ci)
    return images, np.array(ys, dtype=int)


# ------------------------------------------------------------------------------ probe
def make_probe(C: float = 1.0):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=3000, class_weight="balanced"))


def score_predictions(y_true, y_pred, classes: list[str], scores=None, positive: str | None = None) -> dict:
    """Balanced accuracy, per-class recall, confusion matrix (rows true, columns predicted); AUC for a positive class."""
    from sklearn.metrics import balanced_accuracy_score, confusion_matrix, roc_auc_score

    labels = list(range(len(classes)))
    cm = confusion_matrix(y_true, y_pred, labels=labels)
    recall = {c: (float(cm[i, i] / cm[i].sum()) if cm[i].sum() else float("nan")) for i, c in enumerate(classes)}
    out = {"classes": list(classes), "n": int(len(y_true)),
           "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
           "recall": recall, "confusion": cm.tolist()}
    if positive is not None and scores is not None:
        pos = classes.index(positive)
        out["auc"] = float(roc_auc_score(np.asarray(y_true) == pos, scores[:, pos]))
    return out


def fit_and_score(X_train, y_train, X_test, y_test, classes, positive=None, C: float = 1.0) -> dict:
    """Train the probe on one set, score it on another."""
    probe = make_probe(C).fit(X_train, y_train)
    return score_predictions(y_test, probe.predict(X_test), classes, probe.predict_proba(X_test), positive)


def cross_validated(X, y, classes, positive=None, folds: int = 5, C: float = 1.0, seed: int = 0) -> dict:
    """The reference probe: trained and scored on real photographs by stratified k-fold CV."""
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    folds = min(folds, int(np.bincount(y).min()))  # a tiny folder gets fewer folds rather than an error
    cv = StratifiedKFold(n_splits=max(2, folds), shuffle=True, random_state=seed)
    proba = cross_val_predict(make_probe(C), X, y, cv=cv, method="predict_proba")
    return score_predictions(y, proba.argmax(1), classes, proba, positive)


# ------------------------------------------------------------------------------ run
def run_task(name: str, spec: dict, net, args) -> dict:
    classes, positive = spec["classes"], spec.get("positive")
    # a disc tile has no dark surround to crop to: it is only resized
    transform = make_transform(args.feature_size, crop=not args.no_crop and args.view == "fundus")
    t0 = time.time()
    paths, y_real = read_real_folder(spec["folder"], classes)
    X_real = real_features(net, transform, paths, args.feature_size, None if args.no_cache else Path(args.cache_dir), args.view)
    t1 = time.time()
    images, y_syn = render_images(classes, args.n_per_class, args.size, args.seed, args.pipeline)
    if args.view == "disc":
        images = [disc_view(im) for im in images]
    t2 = time.time()
    X_syn = extract_features(net, transform, images)
    t3 = time.time()
    result = {"task": name, "view": args.view, "folder": str(spec["folder"]), "n_synthetic": int(len(y_syn)),
              "tstr": fit_and_score(X_syn, y_syn, X_real, y_real, classes, positive, args.C),
              "seconds": {"real_features": round(t1 - t0, 1), "render": round(t2 - t1, 1),
                          "synthetic_features": round(t3 - t2, 1)}}
    if args.real_probe:
        result["real_probe_cv5"] = cross_validated(X_real, y_real, classes, positive, 5, args.C, args.seed)
    return result


def format_result(r: dict) -> str:
    """Compact table: one line per probe, then the confusion matrices."""
    classes = r["tstr"]["classes"]
    short = [c[:10] for c in classes]
    lines = [f"== {r['task']}{'' if r.get('view', 'fundus') == 'fundus' else ', ' + r['view'] + ' view'} ({r['tstr']['n']} real, {r['n_synthetic']} synthetic; {r['seconds']})"]
    head = f"{'probe':<16}{'BA':>6}{'AUC':>7}" + "".join(f"{s:>12}" for s in short)
    lines.append(head)
    for label, key in (("TSTR", "tstr"), ("real 5-fold CV", "real_probe_cv5")):
        if key not in r:
            continue
        m = r[key]
        auc = f"{m['auc']:.3f}" if "auc" in m else "-"
        lines.append(f"{label:<16}{m['balanced_accuracy']:>6.3f}{auc:>7}"
                     + "".join(f"{m['recall'][c]:>12.2f}" for c in classes))
    for label, key in (("TSTR", "tstr"), ("real 5-fold CV", "real_probe_cv5")):
        if key not in r:
            continue
        lines.append(f"{label} confusion (rows true, columns predicted: {', '.join(short)})")
        for s, row in zip(short, r[key]["confusion"]):
            lines.append(f"  {s:<12}" + "".join(f"{v:>6d}" for v in row))
    return "\n".join(lines)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-per-class", type=int, default=200, help="renders per class (default 200)")
    ap.add_argument("--size", type=int, default=320, help="render size in pixels (default 320)")
    ap.add_argument("--feature-size", type=int, default=224, help="feature network input size (default 224)")
    ap.add_argument("--no-crop", action="store_true",
                    help="pad the whole frame instead of cropping to the fundus (framing then leaks the source)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--view", choices=("fundus", "disc"), default="fundus",
                    help="whole fundus, or a crop round the optic disc of every real and synthetic image")
    ap.add_argument("--C", type=float, default=1.0, help="inverse L2 strength of the logistic regression")
    ap.add_argument("--tasks", default="eyedisease,palm", help=f"comma list of {', '.join(TASKS)}")
    ap.add_argument("--pipeline", default=None, help="renderer pipeline name (passed to render_fundus only when given)")
    ap.add_argument("--real-probe", action="store_true", help="also the reference probe trained on real dev (5-fold CV)")
    ap.add_argument("--cache-dir", default=str(CACHE_DIR))
    ap.add_argument("--no-cache", action="store_true")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (the machine is shared)")
    ap.add_argument("--json", default=None, metavar="OUT", help="also write the results as JSON")
    args = ap.parse_args(argv)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    bad = [t for t in tasks if t not in TASKS]
    if bad or not tasks:
        ap.error(f"unknown task {bad[0] if bad else '(none)'}; choose from {', '.join(TASKS)}")
    args.task_list = tasks
    return args


def main(argv=None) -> list[dict]:
    import torch

    args = parse_args(argv)
    torch.set_num_threads(max(1, args.threads))
    net = load_feature_net()
    results = []
    for name in args.task_list:
        r = run_task(name, TASKS[name], net, args)
        print(format_result(r), flush=True)
        results.append(r)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"args": {k: v for k, v in vars(args).items() if k != "task_list"},
                                               "results": results}, indent=2))
    return results


if __name__ == "__main__":
    main()
