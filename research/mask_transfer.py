"""Does the mask head a run trained on renders find the optic cup, the disc and lesions in real photographs?

    python -m research.mask_transfer --run runs/v1v2-masks-800 [--step 800] [--n-per-class 40]
        [--pipelines v1 v2] [--eval-root ../shared/eval]

A realism measure at the level of structures. The head (`engine.train.masks`) was trained only on
the renders' disc, cup and lesion masks; here each image gets three scores from its predicted maps
(`structure_scores`): the cup-to-disc area ratio, the disc area (disc plus peripapillary atrophy and
tilt, which the renderer marks in the disc channel) and the lesion area. Each score is read as a
detector of one finding, and its AUC is printed on

- held-out renders (seed 2e9, never trained on), with the same score computed from the renders' true
  masks at the head's resolution (the "oracle": how well the score could do if the head were exact);
- the real folders, which are only measured: glaucoma against normal and diabetic retinopathy against
  normal in eyedisease_dev, pathologic myopia against normal in palm_dev.

A score that separates renders but not photographs marks a structure the renders draw differently
from real eyes (or that the head learned from a render-only cue).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.metrics import roc_auc_score

from bench.common import EVAL_ROOT
from engine import VisionCLIP
from engine.evaluate import read_labels
from engine.synth.benchmark import HELD_OUT_SEED
from engine.synth.render import render_fundus
from engine.errors import VisionCLIPError
from engine.train.checkpoints import checkpoint_paths
from engine.train.masks import checkpoint_step, load_mask_head, mask_channels, predict_masks, structure_scores

# (score, positive condition, real folder, real positive label); negatives are normal eyes throughout
FINDINGS = (
    ("cup_to_disc", "glaucoma", "eyedisease_dev", "glaucoma"),
    ("lesion_area", "dr", "eyedisease_dev", "diabetic retinopathy"),
    ("disc_area", "pathologic_myopia", "palm_dev", "pathologic myopia"),
)


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    return float(roc_auc_score(positive, scores)) if 0 < positive.sum() < len(positive) else float("nan")


def synthetic_rows(model, head, conditions: list[str], n_per_class: int, pipeline: str) -> tuple[dict, dict, np.ndarray]:
    """Predicted and true-mask scores of held-out renders, and each render's condition."""
    images, truths, labels = [], [], []
    for c, cond in enumerate(conditions):
        for i in range(n_per_class):
            s = render_fundus(HELD_OUT_SEED + 1000 * c + i, model.image_size, [cond], pipeline)
            images.append(Image.fromarray(s.image))
            truths.append(torch.from_numpy(mask_channels({**s.masks, **s.structures}, s.image.shape[:2])))
            labels.append(cond)
    maps = predict_masks(model, head, images)
    truth = F.adaptive_avg_pool2d(torch.stack(truths).float(), maps.shape[-2:])
    return structure_scores(maps), structure_scores(truth), np.array(labels)


def real_rows(model, head, folder: Path) -> tuple[dict, np.ndarray]:
    items = read_labels(folder)
    return structure_scores(predict_masks(model, head, [p for p, _ in items])), np.array([lbl for _, lbl in items])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="a run folder trained with mask_loss_weight > 0")
    ap.add_argument("--step", type=int, default=None, help="checkpoint step (default: the newest)")
    ap.add_argument("--n-per-class", type=int, default=40)
    ap.add_argument("--pipelines", nargs="+", default=["v1", "v2"])
    ap.add_argument("--eval-root", default=str(EVAL_ROOT))
    args = ap.parse_args()
    try:
        step = checkpoint_step(args.run, args.step)
        model = VisionCLIP.load(checkpoint_paths(Path(args.run), step)[0])
        head = load_mask_head(model, args.run, step)
    except VisionCLIPError as e:
        raise SystemExit(f"mask_transfer: error: {e}") from None
    conditions = ["normal"] + [cond for _, cond, _, _ in FINDINGS]
    print(f"{args.run} step {step}; held-out renders: {args.n_per_class} per condition, seed {HELD_OUT_SEED}\n", flush=True)
    print("| score | finding vs normal | " + " | ".join(f"{p} renders (oracle)" for p in args.pipelines) + " | real | real folder |")
    print("|---|---|" + "---|" * len(args.pipelines) + "---|---|")
    synthetic = {p: synthetic_rows(model, head, conditions, args.n_per_class, p) for p in args.pipelines}
    real = {}
    for score, cond, folder, label in FINDINGS:
        if folder not in real:
            real[folder] = real_rows(model, head, Path(args.eval_root) / folder)
        cells = []
        for p in args.pipelines:
            pred, truth, labels = synthetic[p]
            keep = np.isin(labels, ["normal", cond])
            pos = labels[keep] == cond
            cells.append(f"{auc(pred[score][keep], pos):.3f} ({auc(truth[score][keep], pos):.3f})")
        scores, labels = real[folder]
        keep = np.isin(labels, ["normal", label])
        cells.append(f"{auc(scores[score][keep], labels[keep] == label):.3f}")
        print(f"| {score} | {cond} | " + " | ".join(cells) + f" | {folder} |", flush=True)


if __name__ == "__main__":
    main()
