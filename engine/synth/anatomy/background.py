"""Fundus background: pigmented base colour, macular darkening, peripapillary halo, choroid, nerve fibres."""
from __future__ import annotations

import cv2
import numpy as np

from engine.synth.layer import Layer, register
from engine.synth.primitives import polar_noise, rgb, smooth_noise, tint


@register
class Background(Layer):
    name = "background"
    params = {"macula_dark": (0.12, 0.3),   # macular darkening (luminance drop at the fovea)
              "macula_width": 1.2,          # broad macular Gaussian, in disc diameters squared
              "halo": (0.15, 0.35),         # brighter peripapillary zone
              "sheen": (0.05, 0.14),        # smooth nerve-fibre sheen round the disc
              "tint": (0.9, 1.08)}          # per-channel base colour jitter

    def draw(self, eye, canvas, rng):
        L, uxl, uyl, _ = eye.low
        pig = eye.pigment
        base = np.array([0.95 - 0.45 * pig, 0.6 - 0.34 * pig, 0.36 - 0.24 * pig], np.float32)
        base *= rng.uniform(*self.p["tint"], 3).astype(np.float32)
        lum = 1.0 + smooth_noise(rng, (L, L), 5, 0.05) + smooth_noise(rng, (L, L), 24, 0.018)
        d2f = ((uxl - eye.fx) ** 2 + (uyl - eye.fy) ** 2) / eye.dd ** 2
        mac = (0.6 * np.exp(-d2f / self.p["macula_width"]) + 0.6 * np.exp(-d2f / 0.12)).astype(np.float32)
        d2d = ((uxl - eye.dx) ** 2 + (uyl - eye.dy) ** 2) / eye.dd ** 2
        sheen = np.exp(-d2d / 5.0) * rng.uniform(*self.p["sheen"])
        lum = lum - rng.uniform(*self.p["macula_dark"]) * mac + sheen
        halo = np.exp(-d2d / rng.uniform(0.5, 1.2)) * rng.uniform(*self.p["halo"])
        bgl = np.empty((L, L, 3), np.float32)
        bgl[..., 0] = base[0] * lum * (1 + 0.6 * halo)
        bgl[..., 1] = base[1] * lum * (1 - 0.15 * mac) * (1 + 0.9 * halo)  # macular pigment absorbs G/B
        bgl[..., 2] = base[2] * lum * (1 - 0.1 * mac) * (1 + 0.8 * halo)
        canvas.img = eye.up(bgl)
        canvas.state["R"] = eye.R


@register
class Choroid(Layer):
    """Choroidal tessellation: orange choroidal vessels with dark spaces, seen through thin/blond RPE."""
    name = "choroid"
    words = {"tessellation": ["a tessellated fundus", "prominent choroidal vessels", "myopic tessellation"]}
    params = {"p_visible": 0.5, "strength": 0.6, "texture": 0.0, "faint_scale": 2}

    def draw(self, eye, canvas, rng):
        myopia = eye.case.flag("pathologic_myopia")
        if myopia:
            tess = rng.uniform(0.55, 1.0)
        else:
            tess = self.p["strength"] * rng.beta(1.0, 5.0) * (1 - eye.pigment * 0.6) * (rng.random() < self.p["p_visible"])
            tess = max(tess, self.p["texture"] * rng.uniform(0.3, 1.0))  # v2: some choroidal texture in every eye
        if tess <= 0.05:
            return
        S, R = eye.S, eye.R
        # faint texture (no myopia) is smooth enough to compute on a coarser grid
        grid_of = S if myopia or tess > 0.3 else S * 2 // self.p["faint_scale"]
        # choroidal vessels: noise in polar coordinates (radial stripes) plus isotropic noise contours
        n1, mr, _ = polar_noise(rng, grid_of, eye.cx * grid_of / S, eye.cy * grid_of / S, R * grid_of / S,
                                int(rng.integers(90, 150)), 5, 3.0, cv2.INTER_CUBIC)
        n1 *= 0.5
        T = n1.shape[0]
        n1 += smooth_noise(rng, (T, T), int(rng.integers(22, 34)), 1.0)
        ridge = np.exp(-(n1 ** 2) * 7.0)
        tmap = cv2.resize(tess * (ridge - 0.45) * np.clip(mr * 1.2, 0.3, 1.0), (S, S), interpolation=cv2.INTER_LINEAR)
        gain = tint(tmap, np.array([0.6, 0.45, 0.3], np.float32))
        gain += 1
        canvas.img *= gain
        if myopia:
            canvas.mask("tessellation")[eye.fov] = 1
            canvas.add_finding("tessellation", "diffuse", "marked" if tess > 0.8 else "moderate")


@register
class NerveFibres(Layer):
    """Fine bright striations radiating from the disc, strongest along the arcades above and below it."""
    name = "nerve_fibres"
    params = {"strength": (0.03, 0.09)}

    def draw(self, eye, canvas, rng):
        nfl = rng.uniform(*self.p["strength"]) * (1 - 0.5 * eye.pigment)
        if nfl <= 0.02:
            return
        dxp, dyp = eye.disc_px
        stri, mr, ang = polar_noise(rng, eye.S, dxp, dyp, eye.dd * eye.R, int(rng.integers(260, 420)), 6, 0.6, cv2.INTER_LINEAR)
        env = np.exp(-((mr - 1.6) ** 2) / 1.8) * (0.35 + 0.65 * np.abs(np.sin(ang)))
        canvas.img *= rgb(1 + eye.up((nfl * np.clip(stri, -2, 2) * env).astype(np.float32)))
