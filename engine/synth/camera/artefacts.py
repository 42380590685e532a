"""Acquisition artefacts: eyelash shadow, dust, sensor noise, field-of-view edge, JPEG compression."""
from __future__ import annotations

import cv2
import numpy as np

from engine.synth.layer import Layer, register
from engine.synth.primitives import blur, box, rgb


@register
class Eyelash(Layer):
    """Soft dark smudge entering from the top or bottom rim."""
    name = "eyelash"

    def draw(self, eye, canvas, rng):
        if eye.case.quality == "good" or rng.random() >= 0.35:
            return
        S, R = eye.S, eye.R
        lash = np.zeros((S, S), np.float32)
        top = rng.random() < 0.7
        y0 = (eye.cy - R * rng.uniform(0.75, 1.0)) if top else (eye.cy + R * rng.uniform(0.75, 1.0))
        cv2.ellipse(lash, (int(eye.cx + rng.normal(0, 0.3) * R), int(y0)), (int(R * rng.uniform(0.4, 0.9)), int(R * rng.uniform(0.1, 0.3))),
                    rng.uniform(-15, 15), 0, 360, 1.0, -1)
        canvas.img *= rgb(1 - rng.uniform(0.4, 0.85) * blur(lash, R * 0.08))


@register
class Dust(Layer):
    """Dust on the optics: a few soft dark spots (drawn in small boxes)."""
    name = "dust"

    def draw(self, eye, canvas, rng):
        if rng.random() >= 0.3:
            return
        S = eye.S
        sig = max(0.8, S / 300)
        for _ in range(int(rng.integers(1, 6))):
            x, y = rng.uniform(0.15, 0.85) * S, rng.uniform(0.15, 0.85) * S
            r = max(1, int(S * rng.uniform(0.004, 0.012)))
            sl = box(x, y, r + 4 * sig + 2, S)
            spot = np.zeros((sl[0].stop - sl[0].start, sl[1].stop - sl[1].start), np.float32)
            cv2.circle(spot, (int(x) - sl[1].start, int(y) - sl[0].start), r, 1.0, -1)
            canvas.img[sl] *= (1 - 0.3 * cv2.GaussianBlur(spot, (0, 0), sig))[..., None]


@register
class Sensor(Layer):
    """Sensor noise: half-resolution Gaussian noise up-sampled (grainy, cheap)."""
    name = "sensor"
    params = {"good": 0.003, "usable": 0.008, "reject": 0.02}

    def draw(self, eye, canvas, rng):
        S = eye.S
        nsig = self.p[eye.case.quality] * rng.uniform(0.5, 1.2)
        nz = cv2.resize(rng.standard_normal((S // 2, S // 2)).astype(np.float32), (S, S), interpolation=cv2.INTER_LINEAR)
        canvas.img += rgb(nz * nsig)


@register
class FieldEdge(Layer):
    """Soft edge of the circular field of view (hard at the cropped top and bottom)."""
    name = "field_edge"

    def draw(self, eye, canvas, rng):
        edge = np.clip((1.0 - eye.radius) * (eye.R / 1.5), 0, 1)
        if eye.crop:
            edge = edge * eye.fov
        canvas.img *= rgb(edge)


@register
class Jpeg(Layer):
    """JPEG compression, half of the time. Turns the canvas image to uint8, so it comes last."""
    name = "jpeg"

    def draw(self, eye, canvas, rng):
        if rng.random() >= 0.5:
            return
        q = int(rng.integers(50, 95)) if eye.case.quality != "reject" else int(rng.integers(25, 60))
        out = cv2.convertScaleAbs(canvas.img, alpha=255.0)
        _, buf = cv2.imencode(".jpg", cv2.cvtColor(out, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, q])
        canvas.img = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
