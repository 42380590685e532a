"""The common base of the few-shot adapters: a head over frozen, L2-normalised image embeddings.

Every adapter sees the text side as a :class:`TextAnchor`: the embeddings the zero-shot softmax runs
over (one per subclass, or per class without subclasses), which class each belongs to, and the
model's logit scale. ``TextAnchor.log_probs`` is the zero-shot classifier itself, at class level
(a grouped class's probability is the sum of its subclasses'), so an adapter that adds nothing to it
predicts exactly what the model predicts zero-shot.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from ..errors import VisionCLIPError


@dataclass
class TextAnchor:
    """The zero-shot classifier of a prompt set, reduced to tensors (no text tower needed)."""

    embeddings: torch.Tensor  # (S, D) normalised text embeddings the softmax runs over
    owner: torch.Tensor  # (S,) class index of each row
    logit_scale: float
    classes: list[str]

    @classmethod
    def from_model(cls, model, prompt_set) -> "TextAnchor":
        embeddings, owner = model.scored_embeddings(prompt_set)
        return cls(embeddings.float(), owner.long(), float(model.logit_scale), list(prompt_set.classes))

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def log_probs(self, features: torch.Tensor) -> torch.Tensor:
        """(N, C) zero-shot class log-probabilities, differentiable in ``features``."""
        emb = self.embeddings.to(features.device, features.dtype)
        sub = torch.log_softmax(self.logit_scale * features @ emb.T, dim=-1)
        owner = self.owner.to(features.device)
        out = [torch.logsumexp(sub[:, owner == c], dim=-1) for c in range(self.n_classes)]
        return torch.stack(out, dim=-1)


def as_features(features) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(features) if not isinstance(features, torch.Tensor) else features).float()
    if x.ndim != 2:
        raise VisionCLIPError(f"image embeddings must be a (N, D) array, not shape {tuple(x.shape)}")
    return torch.nn.functional.normalize(x, dim=-1)


def check_support(features: torch.Tensor, labels, anchor: TextAnchor) -> torch.Tensor:
    """Labels as class indices; every class of the anchor needs at least one image."""
    y = torch.as_tensor(np.asarray(labels)).long().flatten()
    if len(y) != len(features):
        raise VisionCLIPError(f"{len(features)} image embeddings but {len(y)} labels")
    if features.shape[1] != anchor.embeddings.shape[1]:
        raise VisionCLIPError(f"image embeddings are {features.shape[1]}-d, the text embeddings {anchor.embeddings.shape[1]}-d")
    if len(y) and (y.min() < 0 or y.max() >= anchor.n_classes):
        raise VisionCLIPError(f"labels must be class indices 0..{anchor.n_classes - 1}")
    counts = torch.bincount(y, minlength=anchor.n_classes)
    empty = [anchor.classes[c] for c in range(anchor.n_classes) if counts[c] == 0]
    if empty:
        raise VisionCLIPError(f"class '{empty[0]}' has no examples{f' (nor {len(empty) - 1} more)' if len(empty) > 1 else ''}: "
                              "give at least one labelled image per class, or leave the class out of the prompt set")
    return y


class FewShotAdapter:
    """fit(features, labels, anchor) -> self; logits/predict_proba(features). Subclasses set ``method``,
    keep their learnt tensors in ``self.state`` and their settings in ``self.params`` (saved as JSON)."""

    method: ClassVar[str] = ""
    needs_examples: ClassVar[bool] = True

    def __init__(self, **params):
        self.params: dict = {**self.default_params(), **params}
        self.state: dict[str, torch.Tensor] = {}
        self.anchor: TextAnchor | None = None

    @classmethod
    def default_params(cls) -> dict:
        return {}

    @property
    def image_features(self) -> str:
        """What one input row holds: "embedding" (``model.encode_images``), or more (engine.adapt.encode_for)."""
        return "embedding"

    def input_dim(self) -> int:
        return self.anchor.embeddings.shape[1]

    def fit(self, features, labels, anchor: TextAnchor) -> "FewShotAdapter":
        x = as_features(features)
        y = check_support(x, labels, anchor) if self.needs_examples else None
        self.anchor = anchor
        # one thread: these problems are tiny, and on a shared machine more threads only wait on each
        # other (clap on 100 cases: 20 s with the default threads under load, 1 s with one)
        with torch.enable_grad(), single_thread():
            self._fit(x, y)
        return self

    def _fit(self, x: torch.Tensor, y: torch.Tensor | None) -> None:
        raise NotImplementedError

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """(N, C) adapted logits, differentiable in ``features`` (Grad-CAM explains them)."""
        if self.anchor is None:
            raise VisionCLIPError(f"the {self.method} adapter is not fitted")
        return self._logits(torch.nn.functional.normalize(features.float(), dim=-1))

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def predict_proba(self, features) -> torch.Tensor:
        with torch.no_grad():
            return self.logits(as_features(features)).softmax(dim=-1)

    def load_state(self, anchor: TextAnchor, state: dict[str, torch.Tensor]) -> "FewShotAdapter":
        self.anchor, self.state = anchor, {k: v.float() for k, v in state.items()}
        return self


@contextlib.contextmanager
def single_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):  # numpy/scipy BLAS under scikit-learn
            yield
    finally:
        torch.set_num_threads(before)


def class_counts(y: torch.Tensor, n_classes: int) -> torch.Tensor:
    return torch.bincount(y, minlength=n_classes).float()
