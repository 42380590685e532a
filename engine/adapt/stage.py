"""A CLAP-style adapter over the image tower's mid-level features as well as its embedding.

The projected embedding of a model trained on synthetic renders alone keeps little of what tells real
photographs apart (a probe on it, fitted on half of eyedisease_dev, reaches 0.67 balanced accuracy);
the pooled outputs of intermediate stages of the tower (EfficientNet-Lite0's blocks 4 and 5, 112 and 192
channels) keep more of the ImageNet initialisation and reach 0.76 (docs/adapters.md). The head
``clap-stage`` is CLAP's residual written on those features: ``logits = log p_zs(c | x) + z . V_c``,
z the stage features standardised by the support set, so V = 0 is exactly the zero-shot classifier,
and each class is pulled back toward it with ``strength * lambda_c / n_c**power * ||V_c||^2``
(lambda_c the mean zero-shot probability of the true class on c's support images).

Its input is one row per image, ``[normalised embedding (D) | pooled features of each stage, ascending]``, from
:func:`encode_with_stage`; :class:`StageFeatures` computes the same row differentiably (Grad-CAM).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import VisionCLIPError
from .base import FewShotAdapter, check_support, class_counts, single_thread

DEFAULT_STAGES = (4, 5)


def as_stages(stages) -> tuple[int, ...]:
    """Stage indices, ascending and distinct, from an int or a list."""
    try:
        out = sorted({int(s) for s in ([stages] if isinstance(stages, (int, np.integer)) else stages)})
    except (TypeError, ValueError):
        raise VisionCLIPError(f"clap-stage stages must be block indices, not {stages!r}") from None
    if not out:
        raise VisionCLIPError("clap-stage needs at least one stage of the image tower")
    return tuple(out)


def _trunk(network: nn.Module) -> nn.Module:
    trunk = getattr(getattr(network, "visual", network), "trunk", None)
    if trunk is None or not isinstance(getattr(trunk, "blocks", None), (nn.Sequential, nn.ModuleList)) \
            or not all(hasattr(trunk, n) for n in ("conv_stem", "bn1", "conv_head", "bn2", "forward_head")):
        raise VisionCLIPError("the clap-stage adapter needs an EfficientNet-like timm image tower (conv_stem, blocks, "
                              "conv_head); this model has another: use --method clap")
    return trunk


class StageFeatures(nn.Module):
    """forward(images) -> (N, D + F): the normalised image embedding and the average-pooled outputs of
    ``trunk.blocks[s]`` for each of ``stages`` (ascending), in one pass written out block by block (no
    hooks, so a forward in another thread never mixes in)."""

    def __init__(self, network: nn.Module, stages=DEFAULT_STAGES):
        super().__init__()
        self.visual = network.visual if hasattr(network, "visual") else network
        self.trunk = _trunk(self.visual)
        self.stages = as_stages(stages)
        bad = [s for s in self.stages if not 0 <= s < len(self.trunk.blocks)]
        if bad:
            raise VisionCLIPError(f"stage {bad[0]} is not a block of this image tower (0..{len(self.trunk.blocks) - 1})")

    @property
    def first_layer(self) -> str:
        """The earliest stage read: every path to the adapted score passes through it (Grad-CAM's layer)."""
        return f"trunk.blocks.{self.stages[0]}"

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        t = self.trunk
        x = t.bn1(t.conv_stem(images))
        pooled = []
        for i, block in enumerate(t.blocks):
            x = block(x)
            if i in self.stages:
                pooled.append(x.float().mean((2, 3)))
        embedding = self.visual.head(t.forward_head(t.bn2(t.conv_head(x))))
        return torch.cat([F.normalize(embedding.float(), dim=-1), *pooled], dim=-1)


@torch.inference_mode()
def encode_with_stage(model, images: Sequence, stages=DEFAULT_STAGES, batch_size: int = 32) -> torch.Tensor:
    """(N, D + F) rows ``[normalised embedding | pooled stage features]`` for ``images`` (paths, PIL images,
    (3, S, S) tensors), float32 on the CPU; the embedding part equals ``model.encode_images``."""
    if not isinstance(images, (list, tuple)):
        images = [images]
    if not images:
        raise VisionCLIPError("no images given")
    wrapper = StageFeatures(model.image_network, stages)  # the lite tower when the whole network is not built
    out = []
    for start in range(0, len(images), batch_size):
        batch = torch.stack([model.image_tensor(im) for im in images[start:start + batch_size]]).to(model.device)
        out.append(wrapper(batch).float().cpu())
    return torch.cat(out)


class ClapStage(FewShotAdapter):
    method = "clap-stage"

    def __init__(self, **params):
        if "stage" in params:  # files written before several stages were read: {"stage": 5}
            params["stages"] = [params.pop("stage")]
        super().__init__(**params)
        self.params["stages"] = list(as_stages(self.params["stages"]))

    @classmethod
    def default_params(cls) -> dict:
        return {"stages": list(DEFAULT_STAGES), "strength": 10.0, "shots_power": 5.0, "min_lambda": 0.05, "max_iter": 100}

    @property
    def stages(self) -> tuple[int, ...]:
        return tuple(self.params["stages"])

    @property
    def image_features(self) -> str:
        return "embedding+" + "+".join(f"stage{s}" for s in self.stages)

    def prepare(self, features) -> torch.Tensor:
        """Normalise the embedding part only; the stage part is standardised by the fitted statistics."""
        x = features if isinstance(features, torch.Tensor) else torch.as_tensor(np.asarray(features))
        x = x.float()
        d = self.anchor.embeddings.shape[1]
        if x.ndim != 2 or x.shape[1] <= d:
            raise VisionCLIPError(f"the clap-stage adapter needs image features [{self.image_features.replace('+', ' | ')}] "
                                  f"wider than {d}, not shape {tuple(x.shape)} (encode with engine.adapt.encode_for)")
        return torch.cat([F.normalize(x[:, :d], dim=-1), x[:, d:]], dim=-1)

    def fit(self, features, labels, anchor) -> "ClapStage":
        self.anchor = anchor
        x = self.prepare(features)
        y = check_support(x[:, :anchor.embeddings.shape[1]], labels, anchor)
        with torch.enable_grad(), single_thread():
            self._fit(x, y)
        return self

    def _fit(self, x: torch.Tensor, y: torch.Tensor) -> None:
        anchor, n_classes, d = self.anchor, self.anchor.n_classes, self.anchor.embeddings.shape[1]
        with torch.no_grad():
            base = anchor.log_probs(x[:, :d])
            true_prob = base.exp()[torch.arange(len(y)), y]
        counts = class_counts(y, n_classes)
        lam = (torch.zeros(n_classes).index_add_(0, y, true_prob) / counts).clamp(min=float(self.params["min_lambda"]))
        penalty = float(self.params["strength"]) * lam / counts ** float(self.params["shots_power"])
        sample_weight = (1.0 / counts)[y] / n_classes  # class-balanced cross-entropy
        stage = x[:, d:]
        # class-balanced centre and per-channel spread of the support set: a big class does not define them
        means = torch.zeros(n_classes, stage.shape[1]).index_add_(0, y, stage) / counts[:, None]
        centre = means.mean(0)
        spread = ((stage - centre).pow(2) * (sample_weight * n_classes)[:, None]).sum(0) / n_classes
        spread = spread.sqrt()
        spread = spread.clamp_min(1e-3 * float(spread.mean()) + 1e-12)
        self.state = {"centre": centre, "spread": spread, "lam": lam}
        z = self._standardised(x)
        v = torch.zeros(n_classes, z.shape[1], requires_grad=True)
        opt = torch.optim.LBFGS([v], lr=1.0, max_iter=int(self.params["max_iter"]), line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            ce = F.cross_entropy(base + z @ v.T, y, reduction="none")
            loss = (sample_weight * ce).sum() + (penalty * (v * v).sum(1)).sum()
            loss.backward()
            return loss

        opt.step(closure)
        self.state["residual"] = v.detach().clone()

    def _standardised(self, x: torch.Tensor) -> torch.Tensor:
        """Stage features in units of the support's spread, over sqrt(F) (so ||z|| is about 1), and a 1
        for the bias."""
        d = self.anchor.embeddings.shape[1]
        centre, spread = (self.state[k].to(x.device, x.dtype) for k in ("centre", "spread"))
        z = (x[:, d:] - centre) / spread / float(len(centre)) ** 0.5
        return torch.cat([z, torch.ones(len(x), 1, device=x.device, dtype=x.dtype)], dim=1)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        if self.anchor is None:
            raise VisionCLIPError(f"the {self.method} adapter is not fitted")
        x = self.prepare(features)
        d = self.anchor.embeddings.shape[1]
        return self.anchor.log_probs(x[:, :d]) + self._standardised(x) @ self.state["residual"].to(x.device, x.dtype).T

    def predict_proba(self, features) -> torch.Tensor:
        with torch.no_grad():
            return self.logits(features).softmax(dim=-1)

    def input_dim(self) -> int:
        return self.anchor.embeddings.shape[1] + len(self.state["centre"])
