"""Pathologic myopia at the posterior pole: lacquer cracks and patchy chorioretinal atrophy
(tessellation, tilted disc and peripapillary atrophy are drawn by the choroid and disc layers)."""
from __future__ import annotations

import cv2
import numpy as np

from engine.synth.layer import Layer, register
from engine.synth.primitives import blur, box, ellipse, polyline, random_walk, smooth_noise


@register
class MyopicMaculopathy(Layer):
    name = "myopic_maculopathy"
    words = {"lacquer_cracks": ["lacquer cracks"],
             "chorioretinal_atrophy": ["patchy chorioretinal atrophy", "myopic chorioretinal atrophy"]}

    def applies(self, case):
        return case.flag("pathologic_myopia")

    def draw(self, eye, canvas, rng):
        R = eye.R
        if rng.random() < 0.5:
            m = canvas.mask("lacquer_cracks")
            for _ in range(int(rng.integers(1, 4))):
                start = eye.px(eye.fx + rng.normal(0, 0.6 * eye.dd), eye.fy + rng.normal(0, 0.6 * eye.dd))
                polyline(canvas.map("bright"), m, random_walk(rng, start, 6, 0.025 * R, 0.35), 0.7, int(0.004 * R))
            canvas.add_finding("lacquer_cracks", "macula", "mild")
        if rng.random() < 0.4:
            self._atrophy(eye, canvas, rng)

    def _atrophy(self, eye, canvas, rng):
        R, S = eye.R, eye.S
        fxp, fyp = eye.fovea_px
        sl = box(fxp, fyp, eye.dd * R * 2.6, S)
        h, w = sl[0].stop - sl[0].start, sl[1].stop - sl[1].start
        if h < 4 or w < 4:
            return
        tmp = np.zeros((h, w), np.float32)
        for _ in range(int(rng.integers(1, 4))):
            px, py = eye.px(eye.fx + rng.normal(0, 0.8 * eye.dd), eye.fy + rng.normal(0, 0.6 * eye.dd))
            ellipse(tmp, None, px - sl[1].start, py - sl[0].start, eye.dd * rng.uniform(0.2, 0.5) * R, 1.0,
                    rng.uniform(0.6, 1), rng.uniform(0, 180))
        # irregular border: blur, perturb with noise, re-threshold
        cells = max(4, int(30 * h / S))
        patch = ((blur(tmp, max(1.0, 0.03 * R)) + smooth_noise(rng, (h, w), cells, 0.12)) > 0.5).astype(np.float32)
        if not patch.any():
            return
        canvas.mask("chorioretinal_atrophy")[sl][patch > 0] = 1
        edge = cv2.GaussianBlur(patch, (0, 0), max(0.8, 0.004 * R))
        ring = np.clip(edge * (1 - edge) * 4, 0, 1)
        canvas.map("white")[sl] += 0.45 * edge
        canvas.map("bright")[sl] += 0.35 * edge
        canvas.map("dark")[sl] += 0.5 * ring * (smooth_noise(rng, (h, w), max(4, int(40 * h / S)), 1.0) > 0.3)
        canvas.add_finding("chorioretinal_atrophy", "macula", "patchy")
