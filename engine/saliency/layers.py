"""Which layer of an open_clip image tower to explain, and how to turn its output into (N, C, h, w).

- timm conv trunks (EfficientNet/MobileNet: ``bn2`` after ``conv_head``; ResNet: ``layer4``;
  ConvNeXt and others: the last stage / last block); otherwise the last Conv2d of the trunk.
- open_clip ModifiedResNet (RN50, ...): ``layer4``.
- open_clip VisionTransformer: the last block's ``ln_1`` (its input feeds the attention that
  writes the pooled token), with a reshape transform derived from the token count at call time.
- timm ViTs inside open_clip: the last block's ``norm1``.

``layers="multiscale"`` picks the stride-4 stage and the default layer, coarsest last (the default
layers of the ``multiscale`` method; the default layer alone on a tower without a stride-4 stage).

``layers="detail"`` picks the tower's stride-4 stage instead (timm's ``feature_info``; ``layer1`` of
open_clip's ModifiedResNet): a grid 8x finer than the last stage, fine enough for scattered lesions
such as DR dots, which a last-stage map cannot resolve (docs/saliency.md).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from ..saliency_names import DETAIL, MULTISCALE  # the names live where the app can read them cheaply


class TokenReshape:
    """Reshape ViT tokens (N, L, D) (or (L, N, D) when not batch-first) to (N, D, h, w).

    The grid is derived from the token count: ``grid`` may be given as (h, w); otherwise the grid is
    the largest square that fits in L and the remaining leading tokens (class token, registers) are
    dropped. Nothing is hard-coded to 14x14.
    """

    def __init__(self, batch_first: bool = True, grid: tuple[int, int] | None = None,
                 num_prefix_tokens: int | None = None):
        self.batch_first = bool(batch_first)
        self.grid = tuple(grid) if grid is not None else None
        self.num_prefix_tokens = num_prefix_tokens

    def grid_for(self, num_tokens: int) -> tuple[int, int, int]:
        """(prefix tokens, h, w) for a sequence of ``num_tokens`` tokens."""
        if self.grid is not None and self.grid[0] * self.grid[1] <= num_tokens:
            h, w = self.grid
            prefix = num_tokens - h * w
            if self.num_prefix_tokens is None or prefix == self.num_prefix_tokens:
                return prefix, h, w
        if self.num_prefix_tokens is not None:
            n = num_tokens - self.num_prefix_tokens
            side = math.isqrt(max(n, 0))
            if side * side == n and side > 0:
                return self.num_prefix_tokens, side, side
        side = math.isqrt(num_tokens)
        if side == 0:
            raise ValueError(f"cannot reshape {num_tokens} tokens into a spatial grid")
        return num_tokens - side * side, side, side

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        if tensor.ndim != 3:
            raise ValueError(f"expected ViT tokens of rank 3, got shape {tuple(tensor.shape)}")
        if not self.batch_first:
            tensor = tensor.permute(1, 0, 2)  # (L, N, D) -> (N, L, D)
        n, length, dim = tensor.shape
        prefix, h, w = self.grid_for(length)
        spatial = tensor[:, prefix:, :].reshape(n, h, w, dim)
        return spatial.permute(0, 3, 1, 2).contiguous()  # channels first, like a CNN

    def __repr__(self) -> str:
        return f"TokenReshape(batch_first={self.batch_first}, grid={self.grid}, prefix={self.num_prefix_tokens})"


def _last_conv(module: nn.Module) -> nn.Module | None:
    last = None
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            last = m
    return last


def _timm_trunk_layer(trunk: nn.Module) -> tuple[nn.Module, Callable | None]:
    # timm ViT-like trunks: tokens out of every block
    blocks = getattr(trunk, "blocks", None)
    if blocks is not None and hasattr(trunk, "num_prefix_tokens") and hasattr(blocks[-1], "norm1"):
        return blocks[-1].norm1, TokenReshape(True, None, int(trunk.num_prefix_tokens))
    for name in ("bn2", "conv_head"):  # EfficientNet / MobileNet: the 1x1 head conv (+BN+act)
        if isinstance(getattr(trunk, name, None), nn.Module) and hasattr(trunk, "conv_head"):
            return getattr(trunk, name), None
    if isinstance(getattr(trunk, "layer4", None), nn.Module):  # ResNet
        return trunk.layer4, None
    stages = getattr(trunk, "stages", None)  # ConvNeXt, RegNet-like
    if isinstance(stages, (nn.Sequential, nn.ModuleList)) and len(stages):
        return stages[-1], None
    if isinstance(blocks, (nn.Sequential, nn.ModuleList)) and len(blocks):
        return blocks[-1], None
    conv = _last_conv(trunk)
    if conv is None:
        raise ValueError(f"no convolutional layer found in {type(trunk).__name__}")
    return conv, None


DETAIL_STRIDE = 4


def detail_layer(visual: nn.Module) -> nn.Module:
    """The image tower's stride-4 stage: its finest grid that still carries learned features."""
    trunk = getattr(visual, "trunk", None)
    info = getattr(trunk, "feature_info", None) if trunk is not None else None
    if info is not None:
        stages = info.get_dicts() if hasattr(info, "get_dicts") else list(info)
        names = [f["module"] for f in stages if isinstance(f, dict) and f.get("reduction") == DETAIL_STRIDE]
        if names:
            return trunk.get_submodule(names[-1])
    if trunk is None and isinstance(getattr(visual, "layer1", None), nn.Module):  # open_clip ModifiedResNet
        return visual.layer1
    raise ValueError(f"'{DETAIL}' needs a convolutional image tower with a stride-{DETAIL_STRIDE} stage; "
                     f"{type(trunk if trunk is not None else visual).__name__} has none (a ViT has a single token "
                     "grid): name a layer instead")


def layer_names(visual: nn.Module) -> list[str]:
    """Dotted names of the tower's modules up to three levels deep: examples of what ``layers`` accepts."""
    return [n for n, _ in visual.named_modules() if n and n.count(".") <= 2]


def resolve_target_layers(visual: nn.Module, names: str | list[str] | tuple[str, ...] | None = None
                          ) -> tuple[list[nn.Module], Callable | None]:
    """Target layers by dotted name inside the image tower (e.g. ``trunk.blocks.5``), comma-separated or a
    list; ``"detail"`` for the tower's stride-4 stage; ``"multiscale"`` for it and the default layer; with no names, the tower's default layer. Several
    layers: grad-cam averages their maps."""
    default, reshape = find_target_layer(visual)
    if names is None or names == "" or names == []:
        return [default], reshape
    if isinstance(names, str) and names.strip().lower() == DETAIL:
        return [detail_layer(visual)], None
    if isinstance(names, str) and names.strip().lower() == MULTISCALE:
        try:
            return [detail_layer(visual), default], reshape
        except ValueError:  # a ViT: one token grid, so one scale
            return [default], reshape
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",")]
    layers = []
    for name in names:
        if not name:
            raise ValueError("empty target layer name")
        try:
            layers.append(visual.get_submodule(name))
        except AttributeError:
            options = layer_names(visual)[-12:]
            raise ValueError(f"unknown target layer {name!r}; for example: {', '.join(options)}") from None
    return layers, reshape


def find_target_layer(visual: nn.Module) -> tuple[nn.Module, Callable | None]:
    """(target layer, reshape_transform or None) for an open_clip image tower (``network.visual``)."""
    trunk = getattr(visual, "trunk", None)
    if trunk is not None:  # open_clip TimmModel
        return _timm_trunk_layer(trunk)
    if isinstance(getattr(visual, "layer4", None), nn.Module):  # open_clip ModifiedResNet
        return visual.layer4, None
    transformer = getattr(visual, "transformer", None)
    if transformer is not None and hasattr(transformer, "resblocks"):  # open_clip VisionTransformer
        block = transformer.resblocks[-1]
        layer = getattr(block, "ln_1", None) or block
        # grid from the token count at call time, so any input size works
        return layer, TokenReshape(batch_first=getattr(transformer, "batch_first", True))
    conv = _last_conv(visual)
    if conv is None:
        raise ValueError(f"don't know which layer of {type(visual).__name__} to explain")
    return conv, None
