"""The screening gauge: how a screening decision reads a labelled folder with healthy eyes.

Specificity (healthy eyes called normal), sensitivity (diseased eyes not called normal), the AUC of
P(abnormal) for diseased against healthy eyes, and per condition against the same folder's healthy
eyes, each with a stratified bootstrap interval; and the paired difference of two decisions on the
same photographs (another model, or another rule), so a gain can be told from the noise of a small folder.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import VisionCLIPError
from .evaluate import _interval, _stratified_weights, _weighted_auc

HEALTHY = "normal"


@dataclass
class ScreeningScores:
    """One decision on one folder: labels, P(abnormal) and finding or not, per photograph."""

    labels: np.ndarray
    p_abnormal: np.ndarray
    finding: np.ndarray

    def __post_init__(self):
        self.labels = np.asarray(self.labels)
        self.p_abnormal = np.asarray(self.p_abnormal, dtype=np.float64)
        self.finding = np.asarray(self.finding, dtype=bool)
        if not len(self.labels) == len(self.p_abnormal) == len(self.finding):
            raise VisionCLIPError("screening scores need one label, P(abnormal) and decision per photograph")
        healthy = self.healthy
        if healthy.all() or not healthy.any():
            raise VisionCLIPError("the screening gauge needs both healthy ('normal') and diseased photographs")

    @property
    def healthy(self) -> np.ndarray:
        return np.char.lower(self.labels.astype(str)) == HEALTHY

    @property
    def conditions(self) -> list[str]:
        return sorted({str(label) for label, h in zip(self.labels, self.healthy) if not h})


def _resampled(scores: ScreeningScores, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Each figure on every resample at once ((R,) arrays; weights (R, N))."""
    healthy = scores.healthy
    figures = {
        "specificity": (weights * (healthy & ~scores.finding)).sum(1) / (weights * healthy).sum(1),
        "sensitivity": (weights * (~healthy & scores.finding)).sum(1) / (weights * ~healthy).sum(1),
        "auc": _weighted_auc(scores.p_abnormal, ~healthy, weights),
    }
    for cond in scores.conditions:
        keep = healthy | (scores.labels == cond)
        figures[f"auc {cond}"] = _weighted_auc(scores.p_abnormal[keep], ~healthy[keep], weights[:, keep])
    return figures


def screening_metrics(scores: ScreeningScores, resamples: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """{figure: value} with ``ci95`` {figure: [low, high]}; figures: specificity, sensitivity, auc and
    ``auc CONDITION`` per condition, plus counts."""
    once = np.ones((1, len(scores.labels)))
    point = {k: float(v[0]) for k, v in _resampled(scores, once).items()}
    result = {**point, "n_healthy": int(scores.healthy.sum()), "n_diseased": int((~scores.healthy).sum())}
    if resamples:
        boot = _resampled(scores, _stratified_weights(scores.labels, resamples, seed))
        result["ci95"] = {k: _interval(v, level) for k, v in boot.items()}
    return result


def paired_screening_difference(a: ScreeningScores, b: ScreeningScores, resamples: int = 1000, seed: int = 0,
                                level: float = 0.95) -> dict:
    """B minus A for each figure on the same photographs, with a paired stratified-bootstrap interval."""
    if not np.array_equal(a.labels, b.labels):
        raise VisionCLIPError("a paired comparison needs the same photographs, in the same order, for both")
    once = np.ones((1, len(a.labels)))
    pa, pb = _resampled(a, once), _resampled(b, once)
    weights = _stratified_weights(a.labels, resamples, seed)
    ra, rb = _resampled(a, weights), _resampled(b, weights)
    return {k: {"difference": float(pb[k][0] - pa[k][0]), "ci95": _interval(rb[k] - ra[k], level)} for k in pa}


def paired_mean_auc_difference(pairs: list[tuple[ScreeningScores, ScreeningScores]], resamples: int = 1000,
                               seed: int = 0, level: float = 0.95) -> dict:
    """The mean over folders of AUC(B) - AUC(A), each folder resampled on its own, paired within it."""
    if not pairs:
        raise VisionCLIPError("no folders to compare")
    diffs, points = [], []
    for i, (a, b) in enumerate(pairs):
        weights = _stratified_weights(a.labels, resamples, seed + i)
        diffs.append(_resampled(b, weights)["auc"] - _resampled(a, weights)["auc"])
        once = np.ones((1, len(a.labels)))
        points.append(_resampled(b, once)["auc"][0] - _resampled(a, once)["auc"][0])
    return {"difference": float(np.mean(points)), "ci95": _interval(np.mean(diffs, axis=0), level)}


def score_folder(model, folder, prompt_set) -> ScreeningScores:
    """The decision of ``model`` with ``prompt_set`` (all its classes) on an encoded labelled folder
    (:func:`engine.evaluate.embed_folder`)."""
    from .screening import screen

    screening = screen(model, folder.embeddings, prompt_set)
    if screening is None:
        raise VisionCLIPError(f"prompt set '{prompt_set.name or 'unnamed'}' has no 'normal' class to screen against")
    return ScreeningScores(np.asarray(folder.labels), screening.p_abnormal, screening.finding)
