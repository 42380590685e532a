"""Grad-CAM saliency for VisionCLIP's image-text scores (softmax or similarity), built on pytorch-grad-cam."""
from .explain import (DETAIL_METHODS, METHODS, SLOW_METHODS, TARGETS, ImageEmbedder, SaliencyResult, cam_map, explain,
                      make_target, render_overlay)
from .layers import DETAIL, TokenReshape, detail_layer, find_target_layer
from .targets import AdapterTarget, SimilarityTarget, SoftmaxTarget

__all__ = ["explain", "SaliencyResult", "METHODS", "SLOW_METHODS", "TARGETS", "DETAIL", "DETAIL_METHODS",
           "ImageEmbedder", "cam_map", "make_target", "render_overlay", "find_target_layer", "detail_layer",
           "TokenReshape", "SimilarityTarget", "SoftmaxTarget", "AdapterTarget"]
