"""Glaucomatous optic neuropathy beyond the enlarged cup (drawn by the disc layer): a rim notch,
a disc-margin haemorrhage, a wedge-shaped nerve-fibre-layer defect and vessels bayoneting at the cup
edge. These are what clinicians use, not disc brightness."""
from __future__ import annotations

import math

import cv2
import numpy as np

from engine.synth.layer import Layer, register
from engine.synth.primitives import box, ellipse, polyline, rgb


@register
class GlaucomaSigns(Layer):
    """Needs the disc layer's geometry (canvas.state["disc"]); runs after the vessel composite."""
    name = "glaucoma_signs"
    words = {"rim_notch": ["notching of the neuroretinal rim", "a focal notch of the neuroretinal rim"],
             "disc_haemorrhage": ["a disc haemorrhage", "a splinter haemorrhage at the disc margin"],
             "rnfl_defect": ["a nerve fibre layer defect", "a wedge-shaped retinal nerve fibre layer defect"],
             "bayoneting": ["bayoneting of vessels at the cup edge", "vessels bending sharply at the cup margin"]}
    params = {"p_notch": 0.45, "p_haemorrhage": 0.25, "p_rnfl": 0.4, "p_bayonet": 0.6}

    def applies(self, case):
        return case.flag("glaucoma")

    def draw(self, eye, canvas, rng):
        d = canvas.state.get("disc")
        if d is None:
            return
        pole = 1 if rng.random() < 0.65 else -1  # +1 inferior (image y grows downwards), the commoner site
        theta = math.pi / 2 * pole + eye.tsign * rng.uniform(0.1, 0.5) * pole  # infero/supero-temporal
        if rng.random() < self.p["p_notch"]:
            self._notch(eye, canvas, rng, d, theta)
        if rng.random() < self.p["p_bayonet"]:
            self._bayonet(eye, canvas, rng, d)
        if rng.random() < self.p["p_haemorrhage"]:
            self._haemorrhage(eye, canvas, rng, d, theta)
        if rng.random() < self.p["p_rnfl"]:
            self._rnfl(eye, canvas, rng, d, theta)

    def _notch(self, eye, canvas, rng, d, theta):
        """The cup reaches the disc margin at one pole: pale cup colour over the rim there."""
        sl = d["box"]
        ox, oy = sl[1].start, sl[0].start
        sub = canvas.img[sl]
        m = np.zeros(sub.shape[:2], np.float32)
        r = d["r"] * rng.uniform(0.18, 0.3)
        dist = d["r"] * 0.78
        ellipse(m, None, d["x"] + dist * math.cos(theta) - ox, d["y"] + dist * math.sin(theta) - oy, r, 1.0, 1.4,
                math.degrees(theta))
        m = cv2.GaussianBlur(m, (0, 0), max(0.6, r * 0.2))
        canvas.mask("rim_notch")[sl][m > 0.4] = 1
        cup = np.array([1.0, 0.92, 0.72], np.float32) * sub.max() * 0.95
        a = m[..., None] * rng.uniform(0.5, 0.8)
        sub[:] = sub * (1 - a) + cup * a
        canvas.add_finding("rim_notch", "inferior rim" if math.sin(theta) > 0 else "superior rim", "focal")

    def _bayonet(self, eye, canvas, rng, d):
        """Vessel segments that drop out of sight at the cup edge and reappear displaced on its floor."""
        m = canvas.mask("bayoneting")
        sl = d["box"]
        sub = canvas.img[sl]
        vmap = np.zeros(sub.shape[:2], np.float32)
        ox, oy = sl[1].start, sl[0].start
        for sgn in (-1, 1):
            a = math.pi / 2 * sgn + rng.normal(0, 0.3)
            r0 = d["cup_r"]
            x0, y0 = d["cup_x"] + r0 * math.cos(a), d["cup_y"] + r0 * math.sin(a)
            x1, y1 = d["cup_x"] + (r0 * 0.6) * math.cos(a + 0.5 * sgn), d["cup_y"] + (r0 * 0.6) * math.sin(a + 0.5 * sgn)
            x2, y2 = d["x"] + d["r"] * 1.1 * math.cos(a), d["y"] + d["r"] * 1.1 * math.sin(a)
            seg = [(x1 - ox, y1 - oy), (x0 - ox, y0 - oy), (x0 - ox + 0.3 * (x2 - x0), y0 - oy + 0.3 * (y2 - y0)), (x2 - ox, y2 - oy)]
            polyline(vmap, None, seg, 1.0, max(1, int(round(d["r"] * 0.09))))
        vmap = cv2.GaussianBlur(vmap, (3, 3), 0)
        m[sl][vmap > 0.3] = 1
        sub *= 1 - vmap[..., None] * np.array([0.2, 0.5, 0.45], np.float32)
        canvas.add_finding("bayoneting", "optic disc", "moderate")

    def _haemorrhage(self, eye, canvas, rng, d, theta):
        """A small splinter haemorrhage crossing the disc margin, radial to the disc."""
        x = d["x"] + d["r"] * 1.02 * math.cos(theta + rng.normal(0, 0.2))
        y = d["y"] + d["r"] * 1.02 * math.sin(theta + rng.normal(0, 0.2))
        ln = d["r"] * rng.uniform(0.25, 0.45)
        sl = box(x, y, ln * 1.5 + 3, eye.S)
        red = canvas.map("red")
        ellipse(red[sl], canvas.mask("disc_haemorrhage")[sl], x - sl[1].start, y - sl[0].start, ln, rng.uniform(0.6, 0.9),
                rng.uniform(0.2, 0.35), math.degrees(theta))
        canvas.add_finding("disc_haemorrhage", "optic disc", "small")

    def _rnfl(self, eye, canvas, rng, d, theta):
        """A dark wedge fanning out from the disc towards the arcade: the nerve-fibre sheen is missing."""
        L, uxl, uyl, _ = eye.low
        px0, py0 = d["x"], d["y"]
        gx = (uxl * eye.R + eye.cx) - px0
        gy = (uyl * eye.R + eye.cy) - py0
        ang = np.arctan2(gy, gx)
        dist = np.sqrt(gx * gx + gy * gy) / d["r"]
        a0 = theta + eye.tsign * rng.uniform(0.1, 0.4) * (1 if math.sin(theta) > 0 else -1)
        half = rng.uniform(0.12, 0.25)
        dang = (ang - a0 + math.pi) % (2 * math.pi) - math.pi
        wedge = np.exp(-(dang / half) ** 4) * np.clip(dist - 1.0, 0, 1) * np.exp(-np.clip(dist - 4.0, 0, None) / 2.0)
        wedge = eye.up(wedge.astype(np.float32))
        canvas.mask("rnfl_defect")[(wedge > 0.5) & eye.fov] = 1
        canvas.img *= rgb(1 - wedge * rng.uniform(0.06, 0.12))
        canvas.add_finding("rnfl_defect", "inferotemporal" if math.sin(theta) > 0 else "superotemporal", "wedge-shaped")
