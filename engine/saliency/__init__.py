"""Grad-CAM saliency for VisionCLIP's image-text scores (softmax or similarity), built on pytorch-grad-cam."""
from .explain import (DEFAULT_METHOD, DETAIL_METHODS, METHOD_LAYERS, METHODS, SLOW_METHODS, TARGETS, ImageEmbedder,
                      SaliencyResult, cam_map, explain, make_target, render_overlay)
from .layers import DETAIL, MULTISCALE, TokenReshape, detail_layer, find_target_layer
from .multiscale import MultiScaleCAM
from .targets import AdapterTarget, SimilarityTarget, SoftmaxTarget
from .where import Landmarks, MapLocation, describe_location, describe_map, find_landmarks

__all__ = ["explain", "SaliencyResult", "METHODS", "DEFAULT_METHOD", "METHOD_LAYERS", "SLOW_METHODS", "TARGETS",
           "DETAIL", "MULTISCALE", "DETAIL_METHODS", "ImageEmbedder", "cam_map", "make_target", "render_overlay",
           "find_target_layer", "detail_layer", "TokenReshape", "MultiScaleCAM", "SimilarityTarget", "SoftmaxTarget",
           "AdapterTarget", "describe_map", "describe_location", "find_landmarks", "Landmarks", "MapLocation"]
