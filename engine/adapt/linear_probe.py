"""The linear-probe baseline: scikit-learn's logistic regression on the frozen embeddings, text unused.

With 1-4 shots per class it usually falls below zero-shot: that is what the text-anchored adapters
are measured against.
"""
from __future__ import annotations

import numpy as np
import torch

from .base import FewShotAdapter


class LinearProbe(FewShotAdapter):
    method = "linear-probe"

    @classmethod
    def default_params(cls) -> dict:
        return {"C": 1.0, "class_weight": "balanced"}  # sklearn's defaults, with classes re-weighted

    def _fit(self, x: torch.Tensor, y: torch.Tensor) -> None:
        from sklearn.linear_model import LogisticRegression  # here: sklearn takes seconds to import

        # features are unit vectors, so scale them to the range of a CLIP logit before the L2 penalty
        clf = LogisticRegression(C=float(self.params["C"]), class_weight=self.params["class_weight"], max_iter=1000)
        clf.fit(x.numpy() * self.anchor.logit_scale, y.numpy())
        coef, bias = clf.coef_ * self.anchor.logit_scale, clf.intercept_
        if coef.shape[0] == 1:  # binary: sklearn keeps one row, the logit of class 1 against class 0
            coef, bias = np.vstack([np.zeros_like(coef), coef]), np.concatenate([[0.0], bias])
        self.state = {"weight": torch.as_tensor(coef).float(), "bias": torch.as_tensor(bias).float()}

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self.state["weight"].to(x.device, x.dtype), self.state["bias"].to(x.device, x.dtype)
        return x @ w.T + b
