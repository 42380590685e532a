"""Illumination, lens (media) opacity, defocus, tone curve."""
from __future__ import annotations

import math

import cv2
import numpy as np

from engine.synth.layer import Layer, register
from engine.synth.primitives import blur, channel_mean, smooth_noise, tint

_UNEVEN = {"good": 0.08, "usable": 0.25, "reject": 0.5}


@register
class Illumination(Layer):
    """Vignetting, uneven illumination, exposure, small-pupil shadow and white balance (low resolution)."""
    name = "illumination"
    params = {"vignette": (0.25, 0.55), "exposure_sd": 0.22, "wb_sd": (0.1, 0.1, 0.18), "p_cool": 0.12}

    def draw(self, eye, canvas, rng):
        q = eye.case.quality
        _, uxl, uyl, rl = eye.low
        illum = 1.0 - rng.uniform(*self.p["vignette"]) * np.clip(rl, 0, 1.2) ** rng.uniform(2.5, 4.5)
        une = _UNEVEN[q] * rng.random()
        ga = rng.random() * 2 * math.pi
        illum = illum * (1 + une * (uxl * math.cos(ga) + uyl * math.sin(ga)))
        expo = rng.lognormal(-0.05, self.p["exposure_sd"])
        if q != "good" and rng.random() < 0.4:
            expo *= rng.choice([rng.uniform(0.35, 0.65), rng.uniform(1.25, 1.55)]) if q == "reject" else rng.uniform(0.6, 0.85)
        illum = illum * expo
        if q != "good" and rng.random() < 0.4:  # small pupil: dark crescent from one side
            a = rng.random() * 2 * math.pi
            d = uxl * math.cos(a) + uyl * math.sin(a)
            illum = illum * np.clip(1 - np.clip((d - rng.uniform(0.1, 0.5)) * 2.5, 0, 1) * rng.uniform(0.5, 0.9), 0, 1)
        wb = np.exp(np.clip(rng.normal(0, self.p["wb_sd"]), -0.25, 0.35)).astype(np.float32)
        if rng.random() < self.p["p_cool"]:  # cooler cameras
            wb *= np.array([0.85, 1.0, 1.15], np.float32)
        canvas.img *= eye.up(illum.astype(np.float32)[..., None] * wb)


@register
class Flare(Layer):
    """Haze / flare crescent at the rim of the field."""
    name = "flare"

    def draw(self, eye, canvas, rng):
        if rng.random() >= (0.15 if eye.case.quality == "good" else 0.4):
            return
        _, uxl, uyl, rl = eye.low
        a = rng.random() * 2 * math.pi
        d = uxl * math.cos(a) + uyl * math.sin(a)
        fl = (np.clip((rl - 0.75) * 4, 0, 1) * np.clip(d, 0, 1) ** 2 * rng.uniform(0.3, 0.9)).astype(np.float32)
        canvas.img += tint(eye.up(fl), np.array([0.6, 0.85, 0.95], np.float32))


@register
class MediaOpacity(Layer):
    """Cataract: blur, a yellow-brown veil and contrast loss, by the case's lens density."""
    name = "media_opacity"
    words = {"media_opacity": ["media opacity", "a hazy view due to lens opacity"]}

    def applies(self, case):
        return case.flag("cataract")

    def draw(self, eye, canvas, rng):
        S = eye.S
        dens = eye.case.cataract_density
        img = blur(canvas.img, S * (0.004 + 0.022 * dens))
        veil = np.array([0.95, 0.85, 0.7], np.float32) * rng.uniform(0.6, 1.0)
        L = eye.low[0]
        vmap = eye.up(np.clip((0.12 + 0.63 * dens) * (0.8 + 0.3 * smooth_noise(rng, (L, L), 3, 1.0)), 0, 0.95))[..., None]
        lumi = channel_mean(img)[..., None]
        canvas.img = img * (1 - vmap) + (veil * 0.8 + lumi * 0.4) * vmap
        canvas.mask(self.name)[eye.fov] = 1
        canvas.add_finding(self.name, "diffuse", "dense" if dens > 0.75 else ("moderate" if dens > 0.4 else "mild"))


@register
class Defocus(Layer):
    name = "defocus"
    params = {"good": (0.6, 2.0), "usable": (1.5, 3.0), "reject": (3.5, 7.0)}  # sigma in px at 512

    def draw(self, eye, canvas, rng):
        sigma = rng.uniform(*self.p[eye.case.quality]) * eye.S / 512
        if sigma > 0.3:
            canvas.img = blur(canvas.img, sigma)


@register
class Tone(Layer):
    """Clip to the sensor range and apply a camera gamma."""
    name = "tone"
    params = {"gamma": (0.8, 1.25)}

    def draw(self, eye, canvas, rng):
        np.clip(canvas.img, 0, 1, out=canvas.img)
        canvas.img = cv2.pow(canvas.img, rng.uniform(*self.p["gamma"]))


@register
class CameraHaze(Layer):
    """A mild veil and softening from a small pupil or a smudged lens: a camera fact, not a cataract, so
    it is drawn on eyes without cataract and weaker than the faintest cataract the renders draw."""
    name = "camera_haze"
    params = {"p": 0.25, "veil": (0.03, 0.12), "blur": (0.001, 0.004)}

    def applies(self, case):
        return not case.flag("cataract")

    def draw(self, eye, canvas, rng):
        if rng.random() >= self.p["p"]:
            return
        img = blur(canvas.img, eye.S * rng.uniform(*self.p["blur"]))
        veil = rng.uniform(*self.p["veil"])
        lumi = channel_mean(img)[..., None]
        canvas.img = img * (1 - veil) + (np.array([0.9, 0.85, 0.75], np.float32) * 0.6 + lumi * 0.4) * veil
