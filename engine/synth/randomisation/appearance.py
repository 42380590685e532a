"""Structure-level appearance randomisation (SynthSeg-style).

SynthSeg trains on images rendered from label maps with every structure's intensity drawn at random,
so that only shape and geometry stay constant. Here, with probability ``p``, each structure (background,
vessels, disc, cup, lesions) gets its own colour and contrast, far beyond what cameras produce, while
what is itself diagnostic stays as a relation: each structure keeps the *sign* of its difference from
the local background (vessels and haemorrhages darker, exudates and a pale cup brighter), only its
size and tint change, and camera and media layers run afterwards, so a cataract still hazes everything.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from engine.synth.layer import Layer, register
from engine.synth.primitives import ellipse, rgb, smooth_noise


def _hue_rotation(theta: float) -> np.ndarray:
    """A 3x3 rotation of RGB about the grey axis (keeps each pixel's mean, turns its hue)."""
    c, s = math.cos(theta), math.sin(theta)
    k = 1 / 3
    q = math.sqrt(k)
    return np.array([[c + (1 - c) * k, k * (1 - c) - q * s, k * (1 - c) + q * s],
                     [k * (1 - c) + q * s, c + k * (1 - c), k * (1 - c) - q * s],
                     [k * (1 - c) - q * s, k * (1 - c) + q * s, c + k * (1 - c)]], np.float32)


def _disc_alphas(canvas) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Soft disc and cup maps rebuilt from the disc layer's geometry (None when no disc was drawn)."""
    d = canvas.state.get("disc")
    if d is None:
        return None, None
    S = canvas.S
    disc = np.zeros((S, S), np.float32)
    cup = np.zeros((S, S), np.float32)
    ellipse(disc, None, d["x"], d["y"], d["r"] * d["ecc"], 1.0, 1 / d["ecc"], d["ang"])
    ellipse(cup, None, d["cup_x"], d["cup_y"], max(0.5, d["cup_r"] * d["ecc"] * d["cup_w"]), 1.0,
            1 / (d["ecc"] * d["cup_w"]), d["ang"])
    k = max(3, int(d["r"] * 0.3) | 1)
    return cv2.GaussianBlur(disc, (k, k), 0), cv2.GaussianBlur(cup, (k, k), 0)


def _lesion_alpha(canvas) -> np.ndarray | None:
    """Union of every finding mask drawn so far, softened by a pixel."""
    if not canvas.masks:
        return None
    m = np.zeros((canvas.S, canvas.S), np.float32)
    for mask in canvas.masks.values():
        np.maximum(m, mask.astype(np.float32), out=m)
    return cv2.GaussianBlur(m, (3, 3), 0) if m.any() else None


@register
class StructureAppearance(Layer):
    """Redraws each structure's colour and contrast around its relation to the background."""
    name = "structure_appearance"
    params = {"p": 0.5,                 # share of renders randomised (the rest keep the realistic look)
              "contrast": (0.4, 2.5),   # log-uniform gain of a structure's difference from its background
              "tint": 0.45,             # per-channel spread of that difference's colour (keeps its sign)
              "hue": 1.0,               # background hue turn, as a fraction of a full turn either way
              "gain": (0.55, 1.5),      # background per-channel gain
              "gamma": (0.6, 1.7),
              "texture": (0.0, 0.18)}   # amplitude of a random low-frequency background texture

    def _gain(self, rng) -> np.ndarray:
        """A per-channel positive gain vector for one structure's detail."""
        lo, hi = self.p["contrast"]
        k = math.exp(rng.uniform(math.log(lo), math.log(hi)))
        t = self.p["tint"]
        return (k * np.exp(rng.uniform(-t, t, 3))).astype(np.float32)

    def draw(self, eye, canvas, rng):
        if rng.random() >= self.p["p"]:
            return
        img = canvas.img
        S = canvas.S
        # local background: a wide blur computed at quarter resolution (structures are the residual)
        small = cv2.resize(img, (max(8, S // 4), max(8, S // 4)), interpolation=cv2.INTER_AREA)
        sig = max(1.0, 0.05 * canvas.state.get("R", S / 2) / 4)
        base = cv2.resize(cv2.GaussianBlur(small, (0, 0), sig), (S, S), interpolation=cv2.INTER_LINEAR)
        detail = img - base

        # background: hue turn, channel gains, gamma, texture; the per-pixel ordering of brightness
        # along the image is kept (monotone in luminance) so vignetting and the macula stay darker
        rot = _hue_rotation(rng.uniform(-math.pi, math.pi) * self.p["hue"])
        gains = rng.uniform(*self.p["gain"], 3).astype(np.float32)
        base = cv2.transform(base, rot * gains[:, None])
        np.clip(base, 0, None, out=base)
        base **= rng.uniform(*self.p["gamma"])
        amp = rng.uniform(*self.p["texture"])
        if amp > 0:
            tex = 1 + amp * smooth_noise(rng, (S, S), int(rng.integers(4, 24)))
            base *= rgb(tex.astype(np.float32))

        # each structure's detail: its own contrast and tint, blended by its soft map
        gain_map = np.ones((S, S, 3), np.float32) * self._gain(rng)  # retina texture and small detail
        vessels = canvas.state.get("vessel_maps")
        disc, cup = _disc_alphas(canvas)
        lesions = _lesion_alpha(canvas)
        for alpha in ((np.clip(vessels[0] + vessels[1], 0, 1) if vessels else None), disc, cup, lesions):
            if alpha is not None:
                gain_map += rgb(alpha) * (self._gain(rng) - gain_map)
        canvas.img = np.clip(base + detail * gain_map, 0, 1.3).astype(np.float32)
