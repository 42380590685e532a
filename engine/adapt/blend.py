"""A training-free blend of the text classifier and the visual class means (SS-Text-like).

In the spirit of SS-Text (MICCAI 2025) and Tip-Adapter's prototypes, without training or tuning: each
class gets a visual prototype, the mean of its support embeddings after removing the support's
class-balanced centre (CLIP embeddings share a large common component, so raw cosine similarities
to class means barely differ). An image's adapted logit for class c is its zero-shot class
log-probability plus ``w_c * scale * cos(x - centre, prototype_c)``, where ``w_c = n_c / (n_c + kappa)``
grows with the class's number of shots: one shot moves the prediction a little, sixteen a lot.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import FewShotAdapter, class_counts


class TextVisualBlend(FewShotAdapter):
    method = "blend"

    @classmethod
    def default_params(cls) -> dict:
        return {"kappa": 4.0, "scale": 3.0}

    def _fit(self, x: torch.Tensor, y: torch.Tensor) -> None:
        n_classes = self.anchor.n_classes
        counts = class_counts(y, n_classes)
        means = torch.zeros(n_classes, x.shape[1]).index_add_(0, y, x) / counts[:, None]
        centre = means.mean(0)  # class-balanced: a big class does not define the centre
        weight = counts / (counts + float(self.params["kappa"]))
        self.state = {"prototypes": F.normalize(means - centre, dim=-1), "centre": centre, "weight": weight}

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        s = {k: v.to(x.device, x.dtype) for k, v in self.state.items()}
        visual = F.normalize(x - s["centre"], dim=-1) @ s["prototypes"].T
        return self.anchor.log_probs(x) + float(self.params["scale"]) * s["weight"] * visual
