"""Class probabilities for the CLI and evaluation: zero-shot or adapted, optionally calibrated on the batch."""
from __future__ import annotations

import torch

from .transductive import calibrate


def class_probabilities(model, image_embeddings: torch.Tensor, prompt_set, adapter=None,
                        transductive: str | None = None) -> torch.Tensor:
    """(N, C): the adapter's probabilities when given (its own prompt set), else zero-shot; then, with
    ``transductive``, calibrated over all N images together (the result depends on the whole batch)."""
    probs = adapter.probabilities(image_embeddings) if adapter is not None else model.probabilities(image_embeddings, prompt_set)
    if transductive:
        if adapter is not None:  # clap-stage reads [embedding | stage features]: the graph is built on the embedding
            image_embeddings = image_embeddings[:, :adapter.head.anchor.embeddings.shape[1]]
        probs = calibrate(probs, image_embeddings, transductive)
    return probs
