"""Multi-scale CAM: lesion-level evidence from a fine layer, gated by the region a coarse layer finds.

A grad-cam method (``BaseCAM`` subclass) over two or more target layers, the coarsest last (the
``multiscale`` layer preset: the tower's stride-4 stage, then its last stage):

- on each fine layer, the element-wise product of gradient and activation (Grad-CAM element-wise,
  kept per position: sharp on scattered dots), smoothed by a Gaussian one stride-4 cell wide;
- on the coarse layer, LayerCAM (positive gradients times activations): where the class's evidence is;
- each normalised to [0, 1] by grad-cam, then multiplied: a fine detail counts where the coarse map
  agrees, so a bright vessel edge far from the finding is damped and the lesion inside it kept.

With one target layer it is LayerCAM on that layer, smoothed. On renders it beats both the last-stage
Grad-CAM and the stride-4 element-wise map on every finding type (docs/saliency.md).
"""
from __future__ import annotations

import cv2
import numpy as np
from pytorch_grad_cam.base_cam import BaseCAM
from pytorch_grad_cam.utils.image import scale_cam_image

SMOOTHING = 1 / 80  # Gaussian sigma as a share of the input side: one stride-4 cell at 320 px


class MultiScaleCAM(BaseCAM):
    coarse_power = 1.0  # weight of the coarse map in the product (0.5: a geometric-mean gate)

    def __init__(self, model, target_layers, reshape_transform=None):
        super().__init__(model, target_layers, reshape_transform)

    def get_cam_image(self, input_tensor, target_layer, target_category, activations, grads, eigen_smooth):
        if len(self.target_layers) > 1 and target_layer is not self.target_layers[-1]:
            return np.maximum(grads * activations, 0).sum(axis=1)  # fine: element-wise
        return (np.maximum(grads, 0) * activations).sum(axis=1)  # coarse: LayerCAM

    def aggregate_multi_layers(self, cam_per_target_layer: list[np.ndarray]) -> np.ndarray:
        cams = np.maximum(np.concatenate(cam_per_target_layer, axis=1), 0)  # (N, layers, H, W), each in [0, 1]
        coarse = cams[:, -1]
        fine = cams[:, :-1].mean(axis=1) if cams.shape[1] > 1 else coarse
        sigma = max(0.5, SMOOTHING * max(fine.shape[-2:]))
        fine = np.stack([cv2.GaussianBlur(f.astype(np.float32), (0, 0), sigma) for f in fine])
        fused = fine * coarse ** self.coarse_power if cams.shape[1] > 1 else fine
        return scale_cam_image(fused)
