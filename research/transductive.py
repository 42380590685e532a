"""Label-free calibration of a whole folder: the unlabelled images correct the classifier's bias.

* ``transclip``: TransCLIP-style (Zanella et al., NeurIPS 2024). Each image's class assignment z_i
  is updated as ``z_i ∝ p_i^lam * N(x_i; mu_c, Sigma) * exp(sum_j w_ij z_j)``: the text (or adapter)
  prediction p_i it must stay near, a Gaussian per class with a shared diagonal covariance fitted to
  the folder's own embeddings, and a kNN affinity graph that pulls neighbouring images together.
* ``em``: the class priors of the folder re-estimated by EM (Saerens et al., 2002), predictions
  re-weighted by new prior / old prior (the old prior taken as uniform).
* ``balanced``: class weights that make every class's mean predicted probability equal (the folder is
  assumed balanced), found by alternating scaling.

Each takes (N, C) probabilities and, for transclip, the (N, D) image embeddings, and returns new
probabilities. They change results on a folder as a whole: outputs must say they were used.

Kept out of the product: on held-out real photographs transclip scored 0.459 against 0.490 zero-shot,
and nothing label-free can promise it is never worse on a given folder. It was the predict / eval
``--transductive`` option and the worklist's "label-free calibration" up to the commit that moved this file to research/.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from engine.errors import VisionCLIPError

METHODS = ("transclip", "em", "balanced")
MIN_IMAGES = 2


def _check(probs: torch.Tensor) -> torch.Tensor:
    p = torch.as_tensor(np.asarray(probs) if not isinstance(probs, torch.Tensor) else probs).double()
    if p.ndim != 2 or len(p) < MIN_IMAGES:
        raise VisionCLIPError(f"transductive calibration needs the probabilities of {MIN_IMAGES} or more images")
    return p.clamp_min(1e-12) / p.clamp_min(1e-12).sum(1, keepdim=True)


def em_priors(probs, iterations: int = 100, tol: float = 1e-6) -> torch.Tensor:
    p = _check(probs)
    old = torch.full((p.shape[1],), 1.0 / p.shape[1], dtype=p.dtype)
    prior, new = old.clone(), p
    for _ in range(iterations):
        new = p * (prior / old)
        new = new / new.sum(1, keepdim=True)
        updated = new.mean(0)
        if (updated - prior).abs().max() < tol:
            break
        prior = updated
    return new.float()


def equal_marginals(probs, iterations: int = 200, tol: float = 1e-6) -> torch.Tensor:
    p = _check(probs)
    scale = torch.ones(p.shape[1], dtype=p.dtype)
    q = p
    for _ in range(iterations):
        q = p * scale
        q = q / q.sum(1, keepdim=True)
        marginal = q.mean(0)
        if (marginal - 1.0 / p.shape[1]).abs().max() < tol:
            break
        scale = scale / (marginal * p.shape[1])
    return q.float()


def knn_affinity(x: torch.Tensor, k: int) -> torch.Tensor:
    """(N, N) sparse-as-dense kNN graph of cosine affinities (positive part), symmetrised, no self loops."""
    sim = x @ x.T
    sim.fill_diagonal_(-float("inf"))
    k = min(k, len(x) - 1)
    val, idx = sim.topk(k, dim=1)
    w = torch.zeros_like(sim).scatter_(1, idx, val.clamp_min(0))
    return (w + w.T) / 2


def transclip(probs, features, lam: float = 1.0, k: int = 3, iterations: int = 10) -> torch.Tensor:
    """TransCLIP-style assignments, in the published form (summed Gaussian log-likelihood, k = 3).

    On this model's embeddings it helps palm_dev and hurts eyedisease_dev (docs/adapters.md): the
    folder's own clusters are not its classes there. Averaging the Gaussian term over dimensions
    instead was tried and rejected: neutral on eyedisease_dev, but it loses the bias correction on a
    biased toy problem (tests/test_adapt.py), the graph term then reinforcing the majority class."""
    p = _check(probs)
    x = F.normalize(torch.as_tensor(np.asarray(features) if not isinstance(features, torch.Tensor) else features).double(), dim=-1)
    if len(x) != len(p):
        raise VisionCLIPError(f"{len(p)} probability rows but {len(x)} image embeddings")
    w = knn_affinity(x, k)
    log_text = lam * p.log()
    z = p.clone()
    for _ in range(iterations):
        # Gaussian per class, shared diagonal covariance, from the current soft assignments
        mass = z.sum(0).clamp_min(1e-6)
        mu = (z.T @ x) / mass[:, None]
        var = (z[:, :, None] * (x[:, None, :] - mu[None]) ** 2).sum((0, 1)) / len(x) + 1e-6
        log_gauss = -0.5 * (((x[:, None, :] - mu[None]) ** 2) / var).sum(-1)
        log_gauss = log_gauss - log_gauss.max(1, keepdim=True).values
        z = torch.softmax(log_text + log_gauss + w @ z, dim=1)
    return z.float()


def calibrate(probs, features=None, method: str = "transclip") -> torch.Tensor:
    """Dispatch by name: ``transclip`` (needs ``features``), ``em`` or ``balanced``."""
    key = str(method).strip().lower()
    if key not in METHODS:
        raise VisionCLIPError(f"unknown transductive method '{method}'; choose one of: {', '.join(METHODS)}")
    if key == "em":
        return em_priors(probs)
    if key == "balanced":
        return equal_marginals(probs)
    if features is None:
        raise VisionCLIPError("transclip calibration needs the image embeddings")
    return transclip(probs, features)


def transductive_gains(x, y, anchor, resamples: int) -> dict:
    """Zero-shot on the whole folder, and a 16-shot clap adapter on the scored half (draw 0), each
    calibrated by every method here: BA before, after, and the paired interval of the gain. Use the
    cached folders and helpers of bench.adapt (``python -m bench.adapt_cache`` first)."""
    from bench.adapt import balanced_accuracy, draw_support, fit_predict, split_halves
    from engine.adapt import make_head
    from engine.evaluate import paired_bootstrap_difference

    rows = {}
    zs = make_head("zero-shot").fit(x, y, anchor).predict_proba(x)
    rng = np.random.default_rng(0)
    pool, test = split_halves(y, rng)
    clap = fit_predict("clap", x, y, draw_support(y, pool, 16, rng), test, anchor)
    for name, probs, idx in (("zero-shot, whole folder", zs, np.arange(len(y))), ("clap 16-shot, scored half", clap, test)):
        base = probs.argmax(1).numpy()
        for t in METHODS:
            after = calibrate(probs, x[idx], t).argmax(1).numpy()
            diff = paired_bootstrap_difference(y[idx].tolist(), base == y[idx], after == y[idx], resamples=resamples)
            rows[f"{name} + {t}"] = {"before": balanced_accuracy(y[idx], base), "after": balanced_accuracy(y[idx], after),
                                     "gain": diff["balanced_accuracy_difference"], "ci95": diff["ci95"]}
    return rows
