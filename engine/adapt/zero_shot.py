"""The zero-shot baseline as an adapter: the model's own prompt-set classifier, nothing learnt."""
from __future__ import annotations

import torch

from .base import FewShotAdapter


class ZeroShot(FewShotAdapter):
    method = "zero-shot"
    needs_examples = False

    def _fit(self, x: torch.Tensor, y: torch.Tensor | None) -> None:
        pass

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.anchor.log_probs(x)
