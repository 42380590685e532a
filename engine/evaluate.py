"""Zero-shot evaluation on a labelled folder (``labels.csv`` with ``path,label``), via scikit-learn."""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from sklearn import metrics as skm

from .errors import VisionCLIPError
from .prompts import PromptSet, load_prompt_set


def read_labels(data_dir: str | Path) -> list[tuple[Path, str]]:
    """(image path, label) rows of DIR/labels.csv; errors name what is missing."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise VisionCLIPError(f"data folder not found: {data_dir}")
    csv_path = data_dir / "labels.csv"
    if not csv_path.is_file():
        raise VisionCLIPError(f"{data_dir} has no labels.csv (columns: path,label)")
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            fields = [c.strip().lower() for c in (reader.fieldnames or [])]
            if "path" not in fields or "label" not in fields:
                raise VisionCLIPError(f"{csv_path} needs the columns path,label (found: {', '.join(fields) or 'none'})")
            rows = [{k.strip().lower(): (v or "").strip() for k, v in r.items() if k} for r in reader]
    except UnicodeDecodeError:
        raise VisionCLIPError(f"{csv_path} is not UTF-8 text") from None
    rows = [r for r in rows if r.get("path")]
    if not rows:
        raise VisionCLIPError(f"{csv_path} lists no images")
    unlabelled = [r["path"] for r in rows if not r.get("label")]
    if unlabelled:
        raise VisionCLIPError(f"{len(unlabelled)} rows of {csv_path.name} have no label (first: {unlabelled[0]})")
    items = [(data_dir / r["path"], r["label"]) for r in rows]
    missing = [str(p.relative_to(data_dir)) for p, _ in items if not p.is_file()]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise VisionCLIPError(f"{len(missing)} image files listed in labels.csv are missing: {', '.join(missing[:3])}{more}")
    return items


def match_labels(labels: list[str], prompt_set: PromptSet, all_classes: bool = False) -> tuple[list[str], PromptSet]:
    """Map each label to its prompt-set class; restrict the set to the classes present unless all_classes."""
    mapped, unknown = [], set()
    for label in labels:
        cls = prompt_set.class_lookup(label)
        if cls is None:
            unknown.add(label)
        mapped.append(cls)
    if unknown:
        raise VisionCLIPError(
            f"labels not in the prompt set: {', '.join(sorted(unknown))} (classes: {', '.join(prompt_set.classes)})"
        )
    if not all_classes:
        prompt_set = prompt_set.subset(set(mapped))
    return mapped, prompt_set


def compute_metrics(y_true: list[str], probs: np.ndarray, classes: list[str], ordered: bool = False) -> dict:
    """Accuracy, balanced accuracy (mean per-class recall), macro F1, per-class OvR AUC, kappa, confusion."""
    y_pred = [classes[i] for i in probs.argmax(1)]
    present = [c for c in classes if c in set(y_true)]
    auc = {}
    for i, c in enumerate(classes):
        positives = np.array([y == c for y in y_true])
        if positives.any() and not positives.all():
            auc[c] = float(skm.roc_auc_score(positives, probs[:, i]))
    kappa = skm.cohen_kappa_score(y_true, y_pred, labels=classes, weights="quadratic" if ordered else None)
    return {
        "n": len(y_true),
        "classes": classes,
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        # mean recall over the classes that occur in the labels (FLAIR's ACA)
        "balanced_accuracy": float(np.mean(skm.recall_score(y_true, y_pred, labels=present, average=None, zero_division=0))),
        "macro_f1": float(skm.f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
        "auc": auc,
        "mean_auc": float(np.mean(list(auc.values()))) if auc else float("nan"),
        "kappa": float(kappa) if np.isfinite(kappa) else float("nan"),
        "kappa_weights": "quadratic" if ordered else "none",
        "confusion_matrix": skm.confusion_matrix(y_true, y_pred, labels=classes).tolist(),
        "chance_balanced_accuracy": 1.0 / max(1, len(present)),
    }


def _weighted_auc(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """One-vs-rest ROC AUC of ``scores`` under each row of ``weights`` (R, N): how often each image is drawn.

    The Mann-Whitney form: the weighted share of (positive, negative) pairs ranked the right way, ties
    counting half, computed for all resamples at once over the scores' sorted unique values.
    """
    order = np.argsort(scores, kind="stable")
    _, starts = np.unique(scores[order], return_index=True)
    w = weights[:, order]
    pos = np.add.reduceat(w * positive[order], starts, axis=1)
    neg = np.add.reduceat(w * ~positive[order], starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    return (pos * (below + 0.5 * neg)).sum(1) / (pos.sum(1) * neg.sum(1))


def _stratified_weights(y: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """(resamples, N): how often each image is drawn when images are resampled within each label."""
    if resamples < 1:
        raise VisionCLIPError("bootstrap needs at least 1 resample")
    rng = np.random.default_rng(seed)
    weights = np.zeros((resamples, len(y)))
    for c in dict.fromkeys(y.tolist()):
        members = np.flatnonzero(y == c)
        weights[:, members] = rng.multinomial(len(members), np.full(len(members), 1 / len(members)), size=resamples)
    return weights


def _weighted_balanced_accuracy(y: np.ndarray, correct: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return np.mean([(weights[:, y == c] * correct[y == c]).sum(1) / (y == c).sum() for c in dict.fromkeys(y.tolist())], axis=0)


def _interval(values: np.ndarray, level: float) -> list[float]:
    tail = (1 - level) / 2 * 100
    return [float(v) for v in np.percentile(values, [tail, 100 - tail])]


def bootstrap_intervals(y_true: list[str], probs: np.ndarray, classes: list[str], resamples: int = 1000,
                        level: float = 0.95, seed: int = 0) -> dict[str, list[float]]:
    """Percentile bootstrap intervals of balanced accuracy and mean AUC.

    Images are resampled within each label (a stratified bootstrap), so every resample keeps the
    folder's class counts and each class's recall and AUC stay defined. The interval says how far a
    figure could move on another draw of as many photographs, which decides whether a difference
    between two models on a small folder means anything.
    """
    y = np.asarray(y_true)
    present = [c for c in classes if c in set(y_true)]
    weights = _stratified_weights(y, resamples, seed)
    correct = probs.argmax(1) == np.array([classes.index(c) for c in y_true])
    bacc = _weighted_balanced_accuracy(y, correct, weights)
    aucs = [_weighted_auc(probs[:, classes.index(c)], y == c, weights) for c in present] if len(present) > 1 else []
    mauc = np.mean(aucs, axis=0) if aucs else np.full(resamples, np.nan)
    return {"balanced_accuracy": _interval(bacc, level), "mean_auc": _interval(mauc, level)}


def paired_bootstrap_difference(labels: list[str], correct_a: np.ndarray, correct_b: np.ndarray, resamples: int = 1000,
                                level: float = 0.95, seed: int = 0) -> dict:
    """Balanced accuracy of B minus A on the same images, with a paired stratified-bootstrap interval.

    Both are scored on each resample, so what the photographs have in common cancels out: the interval
    of the difference is much narrower than the two separate intervals suggest. ``labels`` are the
    folder's labels; ``correct_*`` say per image whether each classifier got it right.
    """
    y = np.asarray(labels)
    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if not len(y) == len(a) == len(b):
        raise VisionCLIPError("paired comparison needs the same images for both")
    weights = _stratified_weights(y, resamples, seed)
    diff = _weighted_balanced_accuracy(y, b, weights) - _weighted_balanced_accuracy(y, a, weights)
    once = np.ones((1, len(y)))  # every image drawn once: the folder itself
    point = float(_weighted_balanced_accuracy(y, b, once)[0] - _weighted_balanced_accuracy(y, a, once)[0])
    return {"balanced_accuracy_difference": point, "ci95": _interval(diff, level), "bootstrap_resamples": resamples}


def compare_results(result_a: dict, result_b: dict, resamples: int = 1000, seed: int = 0) -> dict:
    """:func:`paired_bootstrap_difference` of two :func:`evaluate` results on the same images (B - A)."""
    a, b = result_a["per_image"], result_b["per_image"]

    def correct(r):
        return [p == t for p, t in zip(r["predicted"], r["label"])]
    return paired_bootstrap_difference(b["label"], correct(a), correct(b), resamples=resamples, seed=seed)


@dataclass
class EmbeddedFolder:
    """A labelled folder's images encoded once by one model, to score several prompt sets on."""

    data_dir: Path
    paths: list[Path]
    labels: list[str]
    embeddings: torch.Tensor
    model_id: str


def _embed(model, data_dir, items, progress, batch_size) -> EmbeddedFolder:
    paths = [p for p, _ in items]
    embeddings = model.encode_images(paths, batch_size=batch_size, progress=progress)
    return EmbeddedFolder(Path(data_dir), paths, [label for _, label in items], embeddings, model.model_id)


def embed_folder(model, data_dir: str | Path, progress: Callable[[int, int], None] | None = None,
                 batch_size: int = 32) -> EmbeddedFolder:
    return _embed(model, data_dir, read_labels(data_dir), progress, batch_size)


def evaluate(model, data: str | Path | EmbeddedFolder, prompt_set: PromptSet | str | None = None, all_classes: bool = False,
             progress: Callable[[int, int], None] | None = None, batch_size: int = 32,
             predictions_csv: str | Path | None = None, bootstrap: int = 0, adapter=None) -> dict:
    """Zero-shot metrics of ``model`` on a labelled folder, or on one :func:`embed_folder` encoded.

    ``bootstrap`` resamples add 95% intervals. ``per_image`` holds each image's label and predicted
    class (for :func:`compare_results`). ``adapter`` (engine.adapt.Adapter) scores with its classes
    instead.
    """
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, int) or bootstrap < 0:
        raise VisionCLIPError(f"bootstrap must be a whole number of resamples, 0 or more, not {bootstrap!r}")
    if adapter is not None:
        adapter.check_model(model)
        prompt_set, all_classes = adapter.prompt_set, True  # an adapter's classes are fixed
    elif not isinstance(prompt_set, PromptSet):
        prompt_set = load_prompt_set(prompt_set)
    if isinstance(data, EmbeddedFolder):
        if data.model_id != model.model_id:
            raise VisionCLIPError(f"images were encoded by {data.model_id}, not by {model.model_id}")
        folder, items = data, None
        labels = data.labels
    else:
        folder, items = None, read_labels(data)
        labels = [label for _, label in items]
    y_true, prompt_set = match_labels(labels, prompt_set, all_classes)  # before any image is encoded
    features = None
    if adapter is not None and adapter.image_features != "embedding":  # clap-stage: [embedding | stage features]
        paths = folder.paths if folder is not None else [p for p, _ in items]
        features = adapter.encode(model, paths)
        folder = folder or EmbeddedFolder(Path(data), paths, labels, features[:, :adapter.head.anchor.embeddings.shape[1]], model.model_id)
    folder = folder or _embed(model, data, items, progress, batch_size)
    from .adapt.scoring import class_probabilities

    probs = class_probabilities(model, folder.embeddings if features is None else features, prompt_set, adapter).numpy()
    result = compute_metrics(y_true, probs, prompt_set.classes, ordered=prompt_set.ordered)
    result["per_image"] = {"label": y_true, "predicted": [prompt_set.classes[i] for i in probs.argmax(1)]}
    result["data"] = str(folder.data_dir)
    result["model_id"] = model.model_id
    result["prompt_set_sha256"] = prompt_set.sha256
    if adapter is not None:
        result["adapter"] = adapter.describe()
    if bootstrap:
        result["ci95"] = bootstrap_intervals(y_true, probs, prompt_set.classes, resamples=bootstrap)
        result["bootstrap_resamples"] = bootstrap
    if predictions_csv:
        write_predictions(predictions_csv, folder.data_dir, folder.paths, y_true, probs, prompt_set.classes)
    return result


def write_predictions(path, data_dir, paths, y_true, probs, classes) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "predicted", *classes])
        for p, y, row in zip(paths, y_true, probs):
            w.writerow([str(Path(p).relative_to(data_dir)), y, classes[int(row.argmax())], *[f"{v:.6f}" for v in row]])


def plot_confusion_matrix(result: dict, path: str | Path | None = None, title: str | None = None,
                          xlabel: str = "predicted", ylabel: str = "label"):
    """A matplotlib figure of the confusion matrix; saved to ``path`` when given."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    classes = result["classes"]
    cm = np.asarray(result["confusion_matrix"])
    size = max(4.0, 0.7 * len(classes) + 2.5)
    fig, ax = plt.subplots(figsize=(size, size * 0.85), dpi=110)
    disp = skm.ConfusionMatrixDisplay(cm, display_labels=classes)
    # colour scale from 0, so a matrix of equal counts still shows (and its numbers stay legible)
    disp.plot(ax=ax, cmap="Blues", colorbar=False, xticks_rotation=45, im_kw={"vmin": 0})
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title or f"balanced accuracy {result['balanced_accuracy']:.3f} (n={result['n']})", fontsize=9, wrap=True)
    fig.tight_layout()
    if path:
        fig.savefig(path)
        plt.close(fig)
    return fig
