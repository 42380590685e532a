"""Class probabilities for the CLI and evaluation: zero-shot or adapted."""
from __future__ import annotations

import torch


def class_probabilities(model, image_embeddings: torch.Tensor, prompt_set, adapter=None) -> torch.Tensor:
    """(N, C): the adapter's probabilities when given (its own prompt set), else zero-shot."""
    if adapter is not None:
        return adapter.probabilities(image_embeddings)
    return model.probabilities(image_embeddings, prompt_set)
