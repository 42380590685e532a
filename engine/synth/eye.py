"""Eye geometry: field of view, optic disc, fovea, anatomical look-ups and the vessel tree.

All positions are in normalised units (field-of-view radius 1, centred) so a seed gives the same eye
at every resolution. The geometry is sampled once from the "eye" stream; look-ups are deterministic.
"""
from __future__ import annotations

import math
from functools import cached_property

import cv2
import numpy as np

from engine.synth.case import QUADRANTS, Case
from engine.synth.primitives import grid


class Eye:
    def __init__(self, case: Case, rng: np.random.Generator):
        self.case = case
        S = self.S = case.size
        myopia = case.flag("pathologic_myopia")
        self.crop = rng.random() < 0.3
        self.R = S * (rng.uniform(0.54, 0.62) if self.crop else rng.uniform(0.455, 0.5))
        self.cx = S / 2 + rng.normal(0, 0.01) * S
        self.cy = S / 2 + rng.normal(0, 0.01) * S
        self.tsign = -1 if case.labels["eye_side"] == "right" else 1  # temporal direction (towards the fovea) in x
        # disc diameter (unit): ~1/3 of the field radius in real 45-degree photographs
        self.dd = rng.uniform(0.29, 0.37) * (1.1 if myopia else 1.0)
        self.fy = rng.normal(0.03, 0.04)
        sep = 2.5 * self.dd * rng.uniform(0.9, 1.1) * (1.1 if myopia else 1.0)
        self.fx = self.tsign * sep * (rng.uniform(0.3, 0.55) if rng.random() < 0.8 else rng.uniform(0.1, 0.3))
        self.dx = self.fx - self.tsign * sep
        self.dy = self.fy - rng.uniform(0.02, 0.12) * self.dd * 1.5
        self.crop_rows = int(rng.uniform(0.0, 0.06) * S) if self.crop else 0
        self.pigment = rng.beta(2.0, 2.2)  # fundus pigmentation: 0 blond .. 1 dark
        if myopia:
            self.pigment = max(self.pigment, rng.uniform(0.45, 0.8))

    # ------------------------------------------------------------------ coordinates
    def px(self, x, y):
        """Unit coordinates -> pixels."""
        return self.cx + x * self.R, self.cy + y * self.R

    @property
    def disc_px(self):
        return self.px(self.dx, self.dy)

    @property
    def fovea_px(self):
        return self.px(self.fx, self.fy)

    @property
    def disc_radius_px(self):
        return self.dd * self.R / 2

    @cached_property
    def fov(self) -> np.ndarray:
        """Boolean field-of-view mask (S x S)."""
        yy, xx = grid(self.S)
        ux = (xx - self.cx) * (1.0 / self.R)
        uy = (yy - self.cy) * (1.0 / self.R)
        fov = ux * ux + uy * uy <= 1.0
        if self.crop_rows > 0:
            fov[:self.crop_rows] = False
            fov[self.S - self.crop_rows:] = False
        return fov

    @cached_property
    def radius(self) -> np.ndarray:
        """Distance from the field centre in unit coordinates (S x S float32)."""
        yy, xx = grid(self.S)
        return cv2.magnitude((xx - self.cx) * (1.0 / self.R), (yy - self.cy) * (1.0 / self.R))

    @cached_property
    def low(self):
        """Low-resolution grid for smooth fields: (L, unit x, unit y, unit radius)."""
        L = max(32, self.S // 4)
        yl, xl = grid(L)
        sc = self.S / L
        uxl = (xl * sc + (sc - 1) / 2 - self.cx) / self.R
        uyl = (yl * sc + (sc - 1) / 2 - self.cy) / self.R
        return L, uxl, uyl, np.sqrt(uxl * uxl + uyl * uyl)

    def up(self, f):
        """Up-sample a low-resolution field to the image size."""
        return cv2.resize(f, (self.S, self.S), interpolation=cv2.INTER_LINEAR)

    def visible(self, x, y, margin=0.04) -> bool:
        """Whether a unit-coordinate point lies in the photographed field (inside the image and crop)."""
        px, py = self.px(x, y)
        m = margin * self.R
        return m <= px < self.S - m and self.crop_rows + m <= py < self.S - self.crop_rows - m

    # ------------------------------------------------------------------ anatomy look-ups
    def quadrant(self, x, y):
        """(superior, temporal) of a unit-coordinate point."""
        return y < self.fy, (x - (self.dx + self.fx) / 2) * self.tsign > 0

    def location(self, x, y) -> str:
        """Anatomical location word for a unit-coordinate point."""
        dfx, dfy = x - self.fx, y - self.fy
        if math.hypot(dfx, dfy) < 0.35 * self.dd:
            return "fovea"
        if math.hypot(dfx, dfy) < 1.4 * self.dd:
            return "macula"
        if math.hypot(x - self.dx, y - self.dy) < 0.9 * self.dd:
            return "peripapillary"
        sup, temporal = self.quadrant(x, y)
        if math.hypot(x, y) > 0.78:
            return f"{'superior' if sup else 'inferior'} periphery"
        return QUADRANTS[(sup, temporal)]

    def points(self, rng, n, quadrant=None, rmin=0.15, rmax=0.82, near_macula=0.0):
        """Up to n lesion sites (unit coords) outside the disc, optionally in one quadrant or near the macula."""
        pts = []
        tries = 0
        while len(pts) < n and tries < n * 20:
            tries += 1
            a = rng.random() * 2 * math.pi
            if near_macula and rng.random() < near_macula:
                r = abs(rng.normal(0, 1.3 * self.dd))
                x, y = self.fx + r * math.cos(a), self.fy + r * math.sin(a)
            else:
                r = math.sqrt(rng.uniform(rmin ** 2, rmax ** 2))
                x, y = r * math.cos(a), r * math.sin(a)
            if math.hypot(x, y) > 0.9 or math.hypot(x - self.dx, y - self.dy) < 0.6 * self.dd or not self.visible(x, y):
                continue
            if quadrant is not None and self.quadrant(x, y) != quadrant:
                continue
            pts.append((x, y))
        return pts

    # ------------------------------------------------------------------ vessel tree
    @cached_property
    def _tree(self):
        htn = self.case.flag("hypertensive_retinopathy")
        rng = self.case.rng("vessel_tree")
        art_scale = rng.uniform(0.55, 0.7) if htn else 1.0  # hypertensive arteriolar narrowing
        tort = rng.uniform(0.7, 1.3) * (1.4 if htn else 1.0)
        return art_scale, grow_vessels(self, rng, artery_scale=art_scale, tortuosity=tort)

    @property
    def vessels(self):
        """The retinal vessel tree, grown from its own stream: [(kind, [(x, y)...], [width...])] in unit coords."""
        return self._tree[1]

    @property
    def artery_scale(self) -> float:
        return self._tree[0]


def grow_vessels(eye, rng, artery_scale=1.0, vein_scale=1.0, tortuosity=1.0):
    """Grow artery and vein trees from the disc along the temporal arcades (Murray's law at branches)."""
    vessels = []
    t = eye.tsign
    step = 0.028
    base_w = 0.024 * rng.uniform(0.72, 0.95)  # vein trunk width (unit): ~1/12-1/16 disc diameter
    stack = []
    for kind, wscale in (("vein", vein_scale), ("artery", artery_scale * 0.72)):
        for sup in (-1, 1):
            ang = math.radians(rng.uniform(55, 80))
            h = math.atan2(sup * math.sin(ang), t * math.cos(ang))
            off = rng.uniform(-0.25, 0.25) * eye.dd * 0.5
            stack.append((kind, eye.dx + off, eye.dy + sup * 0.05 * eye.dd, h, base_w * wscale * rng.uniform(0.92, 1.08), sup, 0))
            ang2 = math.radians(rng.uniform(35, 75))
            h2 = math.atan2(sup * math.sin(ang2), -t * math.cos(ang2))
            stack.append((kind, eye.dx + off, eye.dy, h2, base_w * wscale * rng.uniform(0.6, 0.75), False, 0))
        h3 = math.atan2(rng.uniform(-0.2, 0.2), t)  # small macular branches straight from the disc
        stack.append((kind, eye.dx, eye.dy, h3, base_w * wscale * 0.45, False, 1))
    minw = 0.0028
    arc_a = rng.uniform(1.3, 1.9) * eye.dd
    arc_b = rng.uniform(0.8, 1.2) * eye.dd
    arc_c = rng.uniform(0.0, 0.15)
    # the walk below runs ~2000 steps an image: geometry, constants and bound methods are hoisted into
    # locals (same expressions, same values, same draws in the same order)
    dx, fx, fy = eye.dx, eye.fx, eye.fy
    fovea_r2 = (0.45 * eye.dd) ** 2
    turn_sd = 0.045 * tortuosity
    arc_ab = arc_a / arc_b
    two_pi, pi = 2 * math.pi, math.pi
    cos, sin, cosh = math.cos, math.sin, math.cosh
    normal, uniform, exponential, random = rng.normal, rng.uniform, rng.exponential, rng.random
    while stack:
        kind, x, y, h, w, orbit, depth = stack.pop()
        pts, ws = [(x, y)], [w]
        add_pt, add_w = pts.append, ws.append
        dh = 0.0
        length = 0.0
        next_branch = exponential(0.15 if depth < 2 else 0.22) + 0.05
        maxlen = 2.6 if depth == 0 else (uniform(0.35, 1.2) if orbit is not None else uniform(0.12, 0.35))
        shrink = 0.996 if depth == 0 else 0.993
        while True:
            if orbit:  # temporal arcade: follow v(s) = A tanh(s / B) away from the disc, around the fovea
                sx = max(0.0, (x - dx) * t)
                slope = arc_ab / cosh(min(sx / arc_b, 20.0)) ** 2 - arc_c
                target = math.atan2(orbit * slope, t)
                h += 0.3 * ((target - h + pi) % two_pi - pi)
            dh = 0.75 * dh + normal(0, turn_sd)
            h += dh
            x += step * cos(h)
            y += step * sin(h)
            length += step
            w *= shrink
            add_pt((x, y))
            add_w(w)
            if x * x + y * y > 1.08 or length > maxlen or w < minw:
                break
            if depth and (x - fx) ** 2 + (y - fy) ** 2 < fovea_r2:
                break
            if length > next_branch and depth < 5:
                next_branch = length + exponential(0.14 + 0.06 * depth) + 0.05
                wc = w * uniform(0.4, 0.75)
                w = (max(w ** 3 - wc ** 3, (w * 0.5) ** 3)) ** (1 / 3)
                if wc >= minw:
                    side = 1 if random() < 0.5 else -1
                    child = False
                    if orbit:  # arcade branches: mostly to the periphery, small ones towards the fovea
                        rx, ry = x - fx, y - fy
                        cross = cos(h) * ry - sin(h) * rx
                        outward = random() < 0.65
                        side = (1 if cross > 0 else -1) * (1 if outward else -1)
                        if not outward:
                            wc *= 0.7
                            child = None  # short macular branch
                    stack.append((kind, x, y, h + side * math.radians(uniform(40, 75)), wc, child, depth + 1))
        if len(pts) > 1:
            vessels.append((kind, pts, ws))
    return vessels
