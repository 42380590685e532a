"""Tiny grad-cam targets for image-text similarity.

pytorch-grad-cam calls a target on each row of the wrapped model's output (one image embedding,
shape (D,)), or on a batch (N, D); both are handled. The scalar returned is what the map explains.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _as_tensor(x, like: torch.Tensor) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(x)
    return t.to(device=like.device, dtype=like.dtype)


class SimilarityTarget:
    """Cosine similarity of the normalised image embedding to one class's text embedding."""

    def __init__(self, text_embedding: torch.Tensor):
        self.text_embedding = F.normalize(torch.as_tensor(text_embedding).float().flatten(), dim=0)

    def __call__(self, model_output: torch.Tensor) -> torch.Tensor:
        emb = F.normalize(model_output, dim=-1)
        return emb @ _as_tensor(self.text_embedding, emb)

    def __repr__(self) -> str:
        return f"SimilarityTarget(dim={self.text_embedding.numel()})"


class SoftmaxTarget:
    """The class's softmax probability against the other classes (scaled cosine similarities).

    ``owner`` gives, for each row of ``class_embeddings``, the class it belongs to, for prompt sets
    with subclasses: the target is then the sum of that class's subclasses' probabilities."""

    def __init__(self, class_embeddings: torch.Tensor, index: int, logit_scale: float,
                 owner: torch.Tensor | None = None):
        self.class_embeddings = F.normalize(torch.as_tensor(class_embeddings).float(), dim=-1)
        if self.class_embeddings.ndim != 2:
            raise ValueError("class_embeddings must be (C, D)")
        rows = self.class_embeddings.shape[0]
        self.owner = torch.arange(rows) if owner is None else torch.as_tensor(owner).long().flatten()
        if len(self.owner) != rows:
            raise ValueError(f"owner has {len(self.owner)} entries for {rows} embeddings")
        if not bool((self.owner == int(index)).any()):
            raise IndexError(f"class index {index} out of range for {int(self.owner.max()) + 1} classes")
        self.index = int(index)
        self.logit_scale = float(logit_scale)

    def __call__(self, model_output: torch.Tensor) -> torch.Tensor:
        emb = F.normalize(model_output, dim=-1)
        probs = (self.logit_scale * emb @ _as_tensor(self.class_embeddings, emb).T).softmax(dim=-1)
        return probs[..., (self.owner == self.index).to(probs.device)].sum(-1)

    def __repr__(self) -> str:
        return f"SoftmaxTarget(index={self.index}, classes={int(self.owner.max()) + 1})"


class AdapterTarget:
    """A class's probability under a few-shot adapter (engine.adapt): the adapted score, not zero-shot.

    ``adapter`` is an ``engine.adapt.Adapter`` (or any object with ``logits(embeddings) -> (N, C)``,
    differentiable in the embeddings)."""

    def __init__(self, adapter, index: int):
        n = len(adapter.classes)
        if not 0 <= int(index) < n:
            raise IndexError(f"class index {index} out of range for {n} classes")
        self.adapter = adapter
        self.index = int(index)

    def __call__(self, model_output: torch.Tensor) -> torch.Tensor:
        emb = model_output if model_output.ndim == 2 else model_output[None]
        probs = self.adapter.logits(emb.float()).softmax(dim=-1)[..., self.index]
        return probs if model_output.ndim == 2 else probs[0]

    def __repr__(self) -> str:
        return f"AdapterTarget({self.adapter.method}, index={self.index})"
