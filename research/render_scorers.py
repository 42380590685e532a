"""Screening scores fitted on renders' image embeddings, against the prompts' P(abnormal), on real folders.

    python -m research.render_scorers [--model assets/model] [--renders 360] [--eval-root ../shared/eval]

The screening rule asks the text prompts whether a photograph is normal (engine.screening). Each
scorer here asks the image embeddings instead, fitted on healthy and diseased renders only (seeds
apart from training, calibration and the held-out benchmark): a logistic regression (normal against
any condition), the Mahalanobis distance to the healthy renders, its relative form (Ren et al. 2021:
minus the distance to all renders), and the mean cosine similarity to the 10 nearest healthy renders.
Each is scored by the AUC of healthy against diseased eyes on every real folder with both
(evaluation only: nothing is fitted to them).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from bench.common import EVAL_ROOT
from bench.screening import MIN_PER_GROUP, screening_folders
from engine.evaluate import read_labels

HEALTHY_SEED = 1_600_000_000  # apart from training (small), calibration (1.5e9) and the benchmark (2e9)
DISEASED_SEED = 1_700_000_000


def render_embeddings(model, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings, 1 for a condition and 0 for normal) of ``n`` healthy renders and ``n`` renders
    cycling over the pipeline's conditions, at the model's input size."""
    from engine.synth.benchmark import benchmark_samples
    from engine.synth.pipeline import get_pipeline

    conditions = [c for c in get_pipeline(None).conditions if c != "normal"]
    images = [im for im, _ in benchmark_samples(n, HEALTHY_SEED, model.image_size, conditions=["normal"])]
    images += [im for im, _ in benchmark_samples(n, DISEASED_SEED, model.image_size, conditions=conditions)]
    return model.encode_images(images).numpy(), np.repeat([0, 1], n)


def _mahalanobis(x: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
    d = x - mean
    return np.einsum("ij,jk,ik->i", d, precision, d)


def fit_scorers(embeddings: np.ndarray, abnormal: np.ndarray) -> dict:
    """{name: embeddings -> score, higher = more likely abnormal}, each fitted on the renders given."""
    from sklearn.covariance import LedoitWolf
    from sklearn.linear_model import LogisticRegression

    healthy = embeddings[abnormal == 0]
    class_means = np.where(abnormal[:, None] == 0, healthy.mean(0), embeddings[abnormal == 1].mean(0))
    within = LedoitWolf().fit(embeddings - class_means).precision_
    overall = LedoitWolf().fit(embeddings).precision_
    scorers = {}
    for c in (0.1, 1.0, 10.0):
        fitted = LogisticRegression(C=c, max_iter=2000).fit(embeddings, abnormal)
        scorers[f"logistic regression, C={c:g}"] = fitted.decision_function
    scorers["Mahalanobis distance to healthy renders"] = lambda e: _mahalanobis(e, healthy.mean(0), within)
    scorers["relative Mahalanobis distance"] = lambda e: (_mahalanobis(e, healthy.mean(0), within)
                                                          - _mahalanobis(e, embeddings.mean(0), overall))
    scorers["10 nearest healthy renders (cosine)"] = lambda e: -np.sort(e @ healthy.T, axis=1)[:, -10:].mean(1)
    return scorers


def real_folders(model, eval_root: Path, min_eyes: int = MIN_PER_GROUP) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{folder: (embeddings, 1 for a diseased eye)} for every folder with ``min_eyes`` healthy and
    ``min_eyes`` diseased eyes (bench.screening's folders)."""
    out = {}
    for folder in screening_folders(eval_root, min_eyes):
        paths, labels = zip(*read_labels(folder))
        abnormal = np.array([label.lower() != "normal" for label in labels], dtype=int)
        out[folder.name] = (model.encode_images(list(paths)).numpy(), abnormal)
    return out


def main(argv=None) -> None:
    import torch
    from sklearn.metrics import roc_auc_score

    from engine import VisionCLIP
    from engine.prompts import load_prompt_set
    from engine.screening import screen

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--renders", type=int, default=360, help="healthy renders, and as many diseased (default 360)")
    ap.add_argument("--eval-root", default=str(EVAL_ROOT))
    args = ap.parse_args(argv)
    model = VisionCLIP.load(args.model)
    prompts = load_prompt_set(None)
    with torch.inference_mode():
        renders, abnormal = render_embeddings(model, args.renders)
        folders = real_folders(model, Path(args.eval_root))
    scorers = {"the prompts' P(abnormal) (shipped rule)":
               lambda e: screen(model, torch.from_numpy(e), prompts).p_abnormal, **fit_scorers(renders, abnormal)}
    print("scorer | renders | " + " | ".join(folders) + " | mean over folders")
    for name, score in scorers.items():
        aucs = [roc_auc_score(y, score(e)) for e, y in folders.values()]
        print(f"{name} | {roc_auc_score(abnormal, score(renders)):.3f} | "
              + " | ".join(f"{a:.3f}" for a in aucs) + f" | {np.mean(aucs):.3f}")


if __name__ == "__main__":
    main()
