"""The screening gauge's AUCs with a model read at other input sizes than it was trained at.

    python -m research.input_size [--model assets/model] [--sizes 320 416 512] [--calibrate [--drawn-at PX]]

EfficientNet pools over any input size, so a model trained at 320 px can read a photograph at 512 px.
For every real folder with healthy and diseased eyes this prints, at each size, the AUC of
P(abnormal) (the shipped screening rule), per condition, per DR grade where the folder has a
``grade`` column, and specificity and sensitivity at the model's threshold. ``--calibrate`` adds the
threshold that healthy renders drawn at that size would give (engine.screening.calibrate's rule), to
show whether the operating point can still be fixed on synthetic data; ``--drawn-at`` draws those
renders at one size for every read size (a model trained on renders drawn larger than it reads them,
trial 62). Evaluation only.
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from bench.common import EVAL_ROOT
from bench.screening import screening_folders


def read_folder(folder: Path) -> tuple[list[Path], np.ndarray, np.ndarray | None]:
    """(paths, labels, DR grades or None) of a labelled folder."""
    rows = list(csv.DictReader((folder / "labels.csv").open(encoding="utf-8")))
    grades = np.array([int(r["grade"] or 0) for r in rows]) if rows and "grade" in rows[0] else None
    return [folder / r["path"] for r in rows], np.array([r["label"] for r in rows]), grades


def at_size(model, size: int):
    """The model's preprocessing with the input side set to ``size`` (colour target and crop kept)."""
    from engine.factory import preprocess_settings
    from engine.preprocess import FundusTransform

    return FundusTransform(**{**preprocess_settings(model.config), "image_size": size})


def auc_against_healthy(p: np.ndarray, healthy: np.ndarray, positive: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(np.r_[np.zeros(healthy.sum()), np.ones(positive.sum())], np.r_[p[healthy], p[positive]]))


def folder_line(p: np.ndarray, labels: np.ndarray, grades, threshold: float | None, normal: str = "normal") -> str:
    healthy = labels == normal
    parts = [f"AUC {auc_against_healthy(p, healthy, ~healthy):.3f}"]
    parts += [f"{c} {auc_against_healthy(p, healthy, labels == c):.3f}" for c in sorted(set(labels) - {normal})]
    if grades is not None:
        parts += [f"grade {g} {auc_against_healthy(p, healthy, (grades == g) & ~healthy):.3f}"
                  for g in sorted(set(grades[~healthy]))]
    if threshold is not None:
        parts.append(f"at {threshold:.4f}: specificity {(p[healthy] < threshold).mean():.3f}, "
                     f"sensitivity {(p[~healthy] >= threshold).mean():.3f}")
    return "; ".join(parts)


def main(argv=None) -> None:
    import torch

    from engine import VisionCLIP
    from engine.prompts import load_prompt_set
    from engine.screening import CALIBRATION_IMAGES, CALIBRATION_SEED, calibrate_threshold, screen
    from engine.synth.benchmark import benchmark_samples

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--sizes", type=int, nargs="+", default=[320, 416, 512])
    ap.add_argument("--calibrate", action="store_true", help="also the threshold from healthy renders drawn at each size")
    ap.add_argument("--drawn-at", type=int, default=None, metavar="PX",
                    help="with --calibrate: draw the healthy renders at PX for every read size (default: the read size)")
    ap.add_argument("--eval-root", default=str(EVAL_ROOT))
    args = ap.parse_args(argv)
    model = VisionCLIP.load(args.model)
    prompts = load_prompt_set(None)
    threshold = prompts.screening.thresholds.get(model.model_id)
    folders = screening_folders(Path(args.eval_root))
    trained = model.transform
    with torch.inference_mode():
        for size in args.sizes:
            model.transform = at_size(model, size)
            if args.calibrate:
                drawn = args.drawn_at or size
                renders = [im for im, _ in benchmark_samples(CALIBRATION_IMAGES, CALIBRATION_SEED, drawn, conditions=["normal"])]
                healthy = screen(model, model.encode_images(renders, batch_size=8), prompts).p_abnormal
                print(f"{size} px: threshold from healthy renders drawn at {drawn} px: {calibrate_threshold(healthy):.4f}")
            for folder in folders:
                paths, labels, grades = read_folder(folder)
                p = screen(model, model.encode_images(paths, batch_size=8), prompts).p_abnormal
                print(f"{size} px, {folder.name}: {folder_line(p, labels, grades, threshold)}", flush=True)
    model.transform = trained


if __name__ == "__main__":
    main()
