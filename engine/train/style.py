"""MixStyle (Zhou et al., ICLR 2021): feature-statistics mixing for domain generalisation.

The early layers' per-channel means and standard deviations carry an image's "style" (exposure,
texture, camera), the rest its content. Mixing them between images of a batch during training
shows the later layers content under styles the renderer never drew, so that they learn to rely on
content; rendered and photographed fundi differ in style more than in what they depict. Active
only while the hooked layer is in training mode; inference is untouched.
"""
from __future__ import annotations

import torch

from ..errors import VisionCLIPError


class MixStyle:
    """A forward hook: with probability ``p`` a batch's feature statistics are mixed between images."""

    def __init__(self, p: float = 0.5, alpha: float = 0.1, eps: float = 1e-6):
        self.p, self.eps = float(p), eps
        self.beta = torch.distributions.Beta(alpha, alpha)

    def mix(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        if b < 2 or torch.rand(()) >= self.p:
            return x
        mu = x.mean(dim=(2, 3), keepdim=True)
        sig = (x.var(dim=(2, 3), keepdim=True) + self.eps).sqrt()
        mu, sig = mu.detach(), sig.detach()  # as in the paper: no gradient through the statistics
        lam = self.beta.sample((b, 1, 1, 1)).to(x.device, x.dtype)
        perm = torch.randperm(b, device=x.device)
        return (x - mu) / sig * (lam * sig + (1 - lam) * sig[perm]) + lam * mu + (1 - lam) * mu[perm]

    def __call__(self, module: torch.nn.Module, inputs, output: torch.Tensor) -> torch.Tensor:
        return self.mix(output) if module.training else output


def add_mixstyle(visual: torch.nn.Module, layers: list[str], p: float, alpha: float = 0.1) -> list:
    """Hook MixStyle after each named layer of the image tower; returns the hook handles."""
    names = dict(visual.named_modules())
    missing = [n for n in layers if n not in names]
    if missing:
        raise VisionCLIPError(f"config: mixstyle_layers names no layer of the image tower: {', '.join(missing)}")
    hook = MixStyle(p, alpha)
    return [names[n].register_forward_hook(hook) for n in layers]
