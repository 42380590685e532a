"""CLAP-style adapter: a linear head that starts at the zero-shot classifier and is held near it.

Silva-Rodriguez et al., "A Closer Look at the Few-Shot Adaptation of Large Vision-Language Models"
(CVPR 2024): the head is initialised with the class text embeddings, and a class-wise penalty pulls
each class's weights back toward its text embedding, with a multiplier set from how well zero-shot
already does on that class's support images. No validation set, no per-task tuning.

Here the head is written as a residual on the zero-shot class log-probabilities,
``logits = log p_zs(c | x) + s x . V_c``, so that V = 0 is exactly the zero-shot classifier, also for
prompt sets whose classes are made of subclasses (the residual works at class level). The penalty on
class c is ``strength * lambda_c / n_c**power * ||V_c||^2`` (V in the units of the text embeddings,
logits scaled by the model's logit scale as CLAP's are): lambda_c is the mean zero-shot probability of
the true class over c's support images (CLAP's multiplier), and dividing by n_c**power lets the visual
evidence outweigh the text as shots accumulate. The defaults (strength 300, power 3) were picked among
seven settings on bench/adapt.py's folders (docs/adapters.md); no validation set is used when fitting.
The cross-entropy is class-balanced (each class weighs the same whatever its number of shots), so an
imbalanced support set does not push the head toward its big classes.
"""
from __future__ import annotations

import torch

from .base import FewShotAdapter, class_counts


class ClapAdapter(FewShotAdapter):
    method = "clap"

    @classmethod
    def default_params(cls) -> dict:
        return {"strength": 300.0, "max_iter": 100, "min_lambda": 0.05, "standardise": False,
                "shots_power": 3.0}

    def _fit(self, x: torch.Tensor, y: torch.Tensor) -> None:
        anchor, n_classes = self.anchor, self.anchor.n_classes
        with torch.no_grad():
            base = anchor.log_probs(x)
            true_prob = base.exp()[torch.arange(len(y)), y]
        counts = class_counts(y, n_classes)
        lam = torch.zeros(n_classes).index_add_(0, y, true_prob) / counts
        # a class zero-shot gets wholly wrong keeps a little anchoring, or one shot would decide it alone
        lam = lam.clamp(min=float(self.params["min_lambda"]))
        penalty = float(self.params["strength"]) * lam / counts ** float(self.params["shots_power"])
        sample_weight = (1.0 / counts)[y] / n_classes  # class-balanced cross-entropy
        if self.params["standardise"]:
            # the embeddings of one folder share a large common part; the residual works on what differs,
            # in units of its spread, so that one penalty strength suits any model and folder
            centre = (torch.zeros(n_classes, x.shape[1]).index_add_(0, y, x) / counts[:, None]).mean(0)
            spread = (x - centre).pow(2).sum(1).mean().sqrt().clamp_min(1e-6)
        else:  # CLAP as published: residual weights in the units of the text embeddings (logits = scale x.w)
            centre, spread = torch.zeros(x.shape[1]), torch.tensor(1.0 / anchor.logit_scale)
        self.state = {"centre": centre, "spread": spread.reshape(1)}
        z = self._standardised(x)
        v = torch.zeros(n_classes, x.shape[1], requires_grad=True)
        opt = torch.optim.LBFGS([v], lr=1.0, max_iter=int(self.params["max_iter"]), line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            logits = base + z @ v.T
            ce = torch.nn.functional.cross_entropy(logits, y, reduction="none")
            loss = (sample_weight * ce).sum() + (penalty * (v * v).sum(1)).sum()
            loss.backward()
            return loss

        opt.step(closure)
        self.state.update(residual=v.detach().clone(), lam=lam)

    def _standardised(self, x: torch.Tensor) -> torch.Tensor:
        centre, spread = self.state["centre"].to(x.device, x.dtype), self.state["spread"].to(x.device, x.dtype)
        return (x - centre) / spread

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.anchor.log_probs(x) + self._standardised(x) @ self.state["residual"].to(x.device, x.dtype).T
