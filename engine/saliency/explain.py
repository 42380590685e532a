"""Grad-CAM saliency for image-text similarity, on top of pytorch-grad-cam.

``explain(model, image, prompt_set, class_name)`` returns the map on the original photograph
(zero outside the fundus disc), a colour overlay and the map on the model input.
"""
from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass, field
from typing import Callable

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from pytorch_grad_cam import (ActivationsAndGradients, EigenCAM, GradCAM, GradCAMElementWise, GradCAMPlusPlus, HiResCAM,
                              LayerCAM, ScoreCAM)
from torch import nn

from ..errors import VisionCLIPError
from ..saliency_names import DEFAULT_METHOD, DETAIL_METHODS, METHOD_NAMES, SLOW_METHODS, TARGETS
from ..preprocess import fundus_mask, load_image
from ..prompts import PromptSet
from .layers import MULTISCALE, resolve_target_layers
from .multiscale import MultiScaleCAM
from .targets import AdapterTarget, SimilarityTarget, SoftmaxTarget


class ThisThreadActivationsAndGradients(ActivationsAndGradients):
    """grad-cam's recorder that ignores forwards from other threads, so an app classifying with the same
    network meanwhile does not add its activations to this map. Only grad-cam's public hook methods are
    overridden; the hooks themselves are registered by grad-cam."""

    def __init__(self, *args, **kwargs):
        self.owner = threading.get_ident()
        super().__init__(*args, **kwargs)

    def save_activation(self, module, input, output):
        if threading.get_ident() == self.owner:
            super().save_activation(module, input, output)

    def save_gradient(self, module, input, output):
        if threading.get_ident() == self.owner:
            super().save_gradient(module, input, output)


def _this_thread_only(cam_class: type) -> type:
    """A subclass of a grad-cam method whose recorder is ThisThreadActivationsAndGradients."""
    def __init__(self, *args, **kwargs):
        cam_class.__init__(self, *args, **kwargs)
        if not isinstance(getattr(self, "activations_and_grads", None), ActivationsAndGradients):
            # grad-cam changed how a method records: fail loudly rather than map other threads' images
            raise VisionCLIPError(f"unsupported grad-cam version: {cam_class.__name__} has no activations_and_grads")
        self.activations_and_grads.release()
        self.activations_and_grads = ThisThreadActivationsAndGradients(
            self.model, self.target_layers, self.reshape_transform, self.detach)
    return type(cam_class.__name__, (cam_class,), {"__init__": __init__, "__doc__": cam_class.__doc__})


METHODS = {name: _this_thread_only(cls) for name, cls in {
    # the default: stride-4 element-wise detail gated by last-stage LayerCAM; points at lesions on renders
    # far more often than last-stage Grad-CAM, the default before it (docs/saliency.md)
    "multiscale": MultiScaleCAM,
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "layercam": LayerCAM,
    "eigencam": EigenCAM,
    "scorecam": ScoreCAM,
    # element-wise gradient x activation (no channel pooling): the methods that stay sharp on a fine,
    # stride-4 layer (``layers="detail"``), where scattered DR dots are resolved (docs/saliency.md)
    "gradcam-elementwise": GradCAMElementWise,
    "hirescam": HiResCAM,
}.items()}
assert tuple(METHODS) == METHOD_NAMES, "engine/saliency_names.py lists the methods for the app: keep it in step"
METHOD_LAYERS = {"multiscale": MULTISCALE}  # a method's target layers when none are named (else the last stage)
_LOCK = threading.Lock()  # one explain at a time per process: hooks and .grad live on the shared network
_ALIASES = {"grad-cam": "gradcam", "gradcampp": "gradcam++", "gradcamplusplus": "gradcam++", "grad-cam++": "gradcam++",
            "layer-cam": "layercam", "eigen-cam": "eigencam", "score-cam": "scorecam",
            "gradcamelementwise": "gradcam-elementwise", "elementwise": "gradcam-elementwise",
            "grad-cam-elementwise": "gradcam-elementwise", "hires-cam": "hirescam", "multi-scale": "multiscale",
            "fused": "multiscale"}


class ImageEmbedder(nn.Module):
    """The open_clip image tower as a plain module: forward(images) -> (N, D) image embeddings."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.visual = network.visual if hasattr(network, "visual") else network

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.visual(images)
        if isinstance(out, (tuple, list)):  # towers that also return tokens
            out = out[0]
        return out


@dataclass
class SaliencyResult:
    map: np.ndarray  # (H, W) float32 in [0, 1] on the original photograph, zero outside the fundus
    overlay: Image.Image  # the original photograph with the colour map blended inside the fundus
    input_map: np.ndarray  # (S, S) float32 in [0, 1] on the model input
    class_name: str
    method: str
    target: str
    probabilities: dict[str, float] = field(default_factory=dict)

    @property
    def probability(self) -> float:
        return self.probabilities.get(self.class_name, float("nan"))


def resolve_method(method: str) -> str:
    key = str(method).strip().lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    if key not in METHODS:
        raise VisionCLIPError(f"unknown saliency method '{method}'; choose one of: {', '.join(METHODS)}")
    return key


def resolve_class(prompt_set: PromptSet, class_name: str) -> str:
    found = prompt_set.class_lookup(class_name) if class_name is not None else None
    if found is None:
        raise VisionCLIPError(f"unknown class '{class_name}'; the prompt set's classes are: {', '.join(prompt_set.classes)}")
    return found


def make_target(model, prompt_set: PromptSet, class_name: str, target: str | None = None) -> tuple[Callable, str]:
    """(grad-cam target, the target kind actually used) for one class of a prompt set.

    ``None`` picks softmax ("why this class rather than the others") when there are two or more
    classes: on synthetic DR its map peaks on a lesion about twice as often as the similarity map,
    which also lights up the optic disc that every class's prompt shares (docs/saliency.md).
    """
    if target is None:
        target = "softmax" if len(prompt_set) >= 2 else "similarity"
    kind = str(target).strip().lower()
    if kind not in TARGETS:
        raise VisionCLIPError(f"unknown saliency target '{target}'; choose one of: {', '.join(TARGETS)}")
    class_name = resolve_class(prompt_set, class_name)
    index = prompt_set.classes.index(class_name)
    if kind == "softmax" and len(prompt_set) < 2:
        warnings.warn("softmax target is meaningless for one class; using similarity", UserWarning, stacklevel=3)
        kind = "similarity"
    if kind == "softmax":
        embeddings, owner = model.scored_embeddings(prompt_set)
        return SoftmaxTarget(embeddings, index, model.logit_scale, owner=owner), kind
    return SimilarityTarget(model.class_embeddings(prompt_set)[index]), kind


def cam_map(network: nn.Module, input_tensor: torch.Tensor, target: Callable, method: str = DEFAULT_METHOD,
            score_batch_size: int = 32, layers: str | list[str] | None = None,
            wrapper: nn.Module | None = None) -> tuple[np.ndarray, torch.Tensor]:
    """Raw grad-cam map (S, S) in [0, 1] for one (3, S, S) input, and the image embedding (D,).

    ``layers``: target layer names inside the image tower, ``"detail"`` for its stride-4 stage or
    ``"multiscale"`` for it and the last stage (default: the method's, ``METHOD_LAYERS``, else the last stage). ``wrapper``: the module whose output ``target`` reads (default
    :class:`ImageEmbedder`; a clap-stage adapter reads engine.adapt.stage.StageFeatures)."""
    method = resolve_method(method)
    layers = METHOD_LAYERS.get(method) if layers is None or layers == "" or layers == [] else layers
    try:
        target_layers, reshape = resolve_target_layers(network.visual if hasattr(network, "visual") else network, layers)
    except ValueError as e:
        raise VisionCLIPError(str(e)) from None
    wrapper = wrapper if wrapper is not None else ImageEmbedder(network)
    device = next(wrapper.parameters()).device
    x = input_tensor.detach().to(device).float()
    if x.ndim == 3:
        x = x[None]
    with _LOCK:
        # registered before grad-cam's own hooks, so that they see the graph start at the target layers
        starts = [layer.register_forward_hook(_graph_starts_here) for layer in target_layers]
        cam = METHODS[method](model=wrapper, target_layers=target_layers, reshape_transform=reshape)
        if method == "scorecam":
            cam.batch_size = score_batch_size
        trainable = [p for p in wrapper.parameters() if p.requires_grad]
        try:
            # no weight gradients: a map needs the activations' only, and skipping them halves the backward pass
            for p in trainable:
                p.requires_grad_(False)
            with torch.enable_grad():
                grayscale = cam(input_tensor=x, targets=[target])
            embedding = cam.outputs[0].detach().float().cpu()
        finally:
            for p in trainable:
                p.requires_grad_(True)
            for handle in starts:
                handle.remove()
            cam.activations_and_grads.release()
            wrapper.zero_grad(set_to_none=True)
    out = np.nan_to_num(np.asarray(grayscale[0], dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    return np.clip(out, 0.0, 1.0), embedding


def _graph_starts_here(module: nn.Module, inputs, output):
    """Forward hook on a target layer: a map needs gradients down to its target layers only, so the
    autograd graph starts at the first of them, and the layers below it (the largest activations) are
    neither recorded nor back-propagated through."""
    if isinstance(output, torch.Tensor) and not output.requires_grad:
        return output.detach().requires_grad_(True)
    return None


def _normalise(m: np.ndarray) -> np.ndarray:
    hi = float(m.max()) if m.size else 0.0
    return (m / hi).astype(np.float32) if hi > 0 else np.zeros_like(m, dtype=np.float32)


def field_of_view(rgb: np.ndarray) -> np.ndarray:
    """The photograph's field of view for the map: :func:`fundus_mask` with a threshold low enough for a dark
    photograph's vignetted rim (a camera's surround is near 0), its largest part, holes filled, made convex:
    the field is a disc, perhaps cut flat at the top and bottom."""
    lum = rgb[..., 0].astype(np.float32) * 0.6 + rgb[..., 1].astype(np.float32) * 0.4
    mask = fundus_mask(rgb, threshold=max(4.0, 0.05 * float(np.percentile(lum[::4, ::4], 99))))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count <= 1:
        return mask
    largest = labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    # the hull of the outer contour is the hull of the whole part, from a few thousand points, not millions
    contours, _ = cv2.findContours(largest.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    hull = np.zeros(mask.shape, np.uint8)
    cv2.fillConvexPoly(hull, cv2.convexHull(np.concatenate(contours)), 1)
    # the hull's edges cut across the pixels of a digital rim: one pixel in, the lit pixels back
    return cv2.erode(hull, np.ones((3, 3), np.uint8)).astype(bool) | largest


def render_overlay(rgb: np.ndarray, saliency: np.ndarray, mask: np.ndarray, opacity: float = 0.5,
                   colormap: int = cv2.COLORMAP_JET) -> Image.Image:
    """The photograph with the colour-mapped saliency blended at ``opacity`` inside ``mask`` only."""
    heat = cv2.applyColorMap(np.uint8(np.clip(saliency, 0, 1) * 255), colormap)
    heat = cv2.cvtColor(heat, cv2.COLOR_BGR2RGB).astype(np.float32)
    blended = (1.0 - opacity) * rgb.astype(np.float32) + opacity * heat
    out = np.where(mask[..., None], blended, rgb.astype(np.float32))
    return Image.fromarray(np.clip(out, 0, 255).round().astype(np.uint8), "RGB")


def explain(model, image, prompt_set: PromptSet, class_name: str, method: str = DEFAULT_METHOD,
            target: str | None = None, opacity: float = 0.5, colormap: int = cv2.COLORMAP_JET,
            layers: str | list[str] | None = None, adapter=None) -> SaliencyResult:
    """Saliency of one class's image-text score for one photograph; with ``adapter`` (engine.adapt),
    of its adapted probability over the adapter's classes (``prompt_set`` is then the adapter's)."""
    if adapter is not None:
        adapter.check_model(model)
        prompt_set = adapter.prompt_set
    if not isinstance(prompt_set, PromptSet):
        prompt_set = PromptSet.from_dict(prompt_set)
    method = resolve_method(method)
    try:
        opacity = float(opacity)
    except (TypeError, ValueError):
        raise VisionCLIPError(f"opacity must be a number between 0 and 1, not {opacity!r}") from None
    if not 0.0 <= opacity <= 1.0:
        raise VisionCLIPError(f"opacity must be between 0 and 1, not {opacity}")
    class_name = resolve_class(prompt_set, class_name)
    if adapter is not None:
        tgt, kind = AdapterTarget(adapter, prompt_set.classes.index(class_name)), "adapter"
    else:
        tgt, kind = make_target(model, prompt_set, class_name, target)
    if method in SLOW_METHODS and model.device.type == "cpu":
        warnings.warn(f"{method} runs one forward pass per channel of the target layer: slow on CPU", UserWarning,
                      stacklevel=2)

    wrapper = None
    if adapter is not None and adapter.image_features != "embedding":
        # clap-stage's score reads mid-level stages as well as the embedding: explain it at the earliest
        # of them, which every path passes through (the last stage would see the zero-shot part only)
        from ..adapt.stage import StageFeatures

        wrapper = StageFeatures(model.network, adapter.head.stages)
        layers = layers or [wrapper.first_layer]
    img = load_image(image)
    prepared = model.transform.prepare(img)
    raw, embedding = cam_map(model.network, prepared.tensor, tgt, method, layers=layers, wrapper=wrapper)

    input_map = _normalise(raw * prepared.fov)
    rgb = np.asarray(img, dtype=np.uint8)
    fov = field_of_view(rgb)
    full = _normalise(np.clip(prepared.to_original(raw), 0, 1) * fov)

    with torch.no_grad():
        if adapter is not None:
            probs = adapter.probabilities(embedding[None])[0]
        else:
            probs = model.probabilities(F.normalize(embedding[None], dim=-1), prompt_set)[0]
    probabilities = dict(zip(prompt_set.classes, map(float, probs)))
    overlay = render_overlay(rgb, full, fov, opacity, colormap)
    return SaliencyResult(full, overlay, input_map, class_name, method, kind, probabilities)
