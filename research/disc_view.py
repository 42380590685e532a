"""A disc-centred second view (issue 35, lever "the disc read at the resolution it needs"): diagnostics.

    python -m research.disc_view probe [--pipelines v1 v2 ...] [--n 300] [--side 0.3]

Trial 42 found that the shipped model, trained on whole fundi, reads real disc crops worse than whole
photographs. Before training a second view, this asks whether disc crops of the renders carry a glaucoma
signal that transfers to real discs at all: a logistic regression, glaucoma against healthy, fitted on
the image features of render disc crops only, is scored on real disc crops (train on synthetic, test on
real; nothing is fitted to a real photograph). Features: the shipped model's trunk (1280-d pooled, before
the projection) and the same trunk with its ImageNet weights. Every crop, render or real, is taken by one
rule: the square fundus at ``CANVAS`` px, its brightest blurred spot (``engine.preprocess.disc_centre``),
a square of ``--side`` of the width round it, resized to the model's input size.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.common import EVAL_ROOT
from engine.evaluate import read_labels
from engine.preprocess import disc_centre, load_image, square_crop

CANVAS = 448  # px of the square fundus the disc is found and cropped on
SIDE = 0.3    # crop side, as a fraction of the fundus width: about two and a half disc diameters
RENDER_SEED = 1_800_000_000  # apart from training (small), calibration (1.5e9) and the benchmark (2e9)


def disc_crop(model, source, side: float = SIDE, canvas: int = CANVAS) -> np.ndarray:
    """The (S, S, 3) uint8 square round the optic disc of a fundus photograph, at the model's input size."""
    square, *_ = model.transform.square_fundus(load_image(source))
    rgb = np.asarray(square.convert("RGB").resize((canvas, canvas), Image.BICUBIC))
    y, x = disc_centre(rgb)
    return square_crop(rgb, y, x, side, out=model.image_size)


@torch.no_grad()
def trunk_features(model, crops: list[np.ndarray], batch: int = 32) -> np.ndarray:
    """(N, 1280) pooled trunk features of crops, normalised as the model normalises a photograph."""
    trunk = model.image_network.visual.trunk.eval()
    out = []
    for start in range(0, len(crops), batch):
        x = torch.stack([model.transform.normalise(c) for c in crops[start:start + batch]])
        out.append(trunk(x.contiguous(memory_format=torch.channels_last)).float().numpy())
    return np.concatenate(out)


def render_crops(model, pipeline: str | None, n: int, side: float, seed: int = RENDER_SEED) -> tuple[list, np.ndarray]:
    """Disc crops of ``n`` glaucoma and ``n`` healthy renders of a pipeline, drawn at CANVAS px, and 1 for
    glaucoma."""
    from engine.synth import render_fundus

    crops, target = [], []
    for cond, y in (("glaucoma", 1), ("normal", 0)):
        for i in range(n):
            crops.append(disc_crop(model, Image.fromarray(render_fundus(seed + i, CANVAS, [cond], pipeline).image), side))
            target.append(y)
    return crops, np.array(target)


def real_rows(folder: Path, condition: str) -> tuple[list[Path], np.ndarray]:
    """Paths and 1 for ``condition``, 0 for healthy, of one real folder's photographs of either label."""
    keep = [(p, int(lab == condition)) for p, lab in read_labels(folder) if lab in (condition, "normal")]
    return [p for p, _ in keep], np.array([t for _, t in keep])


def probe(args) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    import research  # noqa: F401  (registers the trial pipelines)
    from engine import VisionCLIP

    shipped = VisionCLIP.load(args.model)
    imagenet = VisionCLIP.from_config(shipped.config, pretrained_towers=True)
    imagenet.transform = shipped.transform  # the same input, only the weights differ
    trunks = {"ImageNet trunk": imagenet, "shipped trunk": shipped}
    real_paths, real_y = real_rows(Path(args.eval_root) / "eyedisease_dev", "glaucoma")
    real_crops = [disc_crop(shipped, p, args.side) for p in real_paths]
    real = {name: trunk_features(model, real_crops) for name, model in trunks.items()}
    print(f"{args.n} glaucoma and {args.n} healthy renders a pipeline, {CANVAS} px; eyedisease_dev "
          f"{int(real_y.sum())} glaucoma, {int((1 - real_y).sum())} normal; crop side {args.side}")
    for pipeline in args.pipelines:
        crops, y = render_crops(shipped, pipeline, args.n, args.side)
        for name, model in trunks.items():
            features = trunk_features(model, crops)
            for c in (0.01, 1.0):
                clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000)).fit(features, y)
                print(f"{pipeline}, {name}, C={c:g}: training AUC on renders "
                      f"{roc_auc_score(y, clf.decision_function(features)):.3f}, on real discs "
                      f"{roc_auc_score(real_y, clf.decision_function(real[name])):.3f}", flush=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("probe", help="a glaucoma probe fitted on render disc crops, scored on real disc crops")
    p.add_argument("--model", default="assets/model")
    p.add_argument("--pipelines", nargs="+", default=["v1"])
    p.add_argument("--n", type=int, default=300, help="renders a class (glaucoma, healthy) and pipeline")
    p.add_argument("--side", type=float, default=SIDE)
    p.add_argument("--eval-root", default=str(EVAL_ROOT))
    args = ap.parse_args(argv)
    probe(args)


if __name__ == "__main__":
    main()
