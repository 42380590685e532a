"""What healthy eyes show that is not disease: light reflexes, a few small hard drusen, myelinated nerve
fibres. Drawn only on healthy eyes, with no
finding recorded and no mask, so a healthy render's caption stays plain: these are hard negatives, the
look-alikes of exudates, drusen, cotton-wool spots and cataract that a screening model must call normal.
Neither v1 nor v2 draws them; a pipeline adds them with ``with_layer`` (with camera_haze, the
mild veil that is not a cataract)."""
from __future__ import annotations

import math

import numpy as np

from engine.synth.case import Case
from engine.synth.findings.common import blob
from engine.synth.layer import Layer, register
from engine.synth.primitives import blur, ellipse, rgb, smooth_noise
from engine.synth.schema import CONDITION_KEYS

_SHEEN = np.array([0.75, 0.9, 1.0], np.float32)  # reflexes are bluish white: the light source, not tissue


def is_healthy(case: Case) -> bool:
    return not case.dr_grade and not any(case.labels.get(flag) for flag in CONDITION_KEYS.values())


@register
class NormalVariants(Layer):
    """Runs after the vessel composite and before the lesion composite (its drusen join the bright map)."""
    name = "normal_variants"
    params = {"p_foveal_reflex": 0.6, "p_macular_ring": 0.3, "p_sheen": 0.4, "p_drusen": 0.25,
              "p_myelinated": 0.06}

    def applies(self, case):
        return is_healthy(case)

    def draw(self, eye, canvas, rng):
        p = self.p
        if rng.random() < p["p_foveal_reflex"]:
            self._foveal_reflex(eye, canvas, rng, ring=rng.random() < p["p_macular_ring"])
        if rng.random() < p["p_sheen"]:
            self._sheen(eye, canvas, rng)
        if rng.random() < p["p_drusen"]:
            self._small_drusen(eye, canvas, rng)
        if rng.random() < p["p_myelinated"]:
            self._myelinated_fibres(eye, canvas, rng)

    def _foveal_reflex(self, eye, canvas, rng, ring):
        """A pinpoint reflex at the foveal pit and, in young eyes, a faint annular reflex round the macula."""
        fx, fy = eye.fovea_px
        spot = np.zeros((eye.S, eye.S), np.float32)
        ellipse(spot, None, fx, fy, max(0.8, eye.R * rng.uniform(0.006, 0.014)), 1.0)
        spot = blur(spot, max(0.6, eye.S / 400))
        if ring:  # soft and broken, as a real annular reflex is
            r = eye.dd * eye.R * rng.uniform(0.7, 1.1)
            band = np.zeros_like(spot)
            ellipse(band, None, fx, fy, r, 1.0, rng.uniform(0.8, 1.0))
            band = blur(band, r * 0.08)
            band = band * (1 - band) * 4  # peaks on the ellipse's edge
            broken = np.clip(eye.up(smooth_noise(rng, (eye.low[0],) * 2, 8, 1.0)) + 0.3, 0, 1)
            spot += band * broken * rng.uniform(0.15, 0.35)
        canvas.img += rgb(spot * rng.uniform(0.15, 0.35)) * _SHEEN

    def _sheen(self, eye, canvas, rng):
        """Patchy inner-limiting-membrane sheen along the arcades, strongest in young eyes."""
        L, uxl, uyl, rl = eye.low
        dist_disc = np.hypot(uxl - eye.dx, uyl - eye.dy) / eye.dd
        band = np.exp(-((dist_disc - rng.uniform(1.2, 2.2)) / 0.9) ** 2) * (rl < 0.85)
        patches = np.clip(smooth_noise(rng, (L, L), int(rng.integers(6, 12)), 1.0) - 0.35, 0, 1)
        sheen = eye.up((band * patches).astype(np.float32))
        canvas.img += rgb(sheen * rng.uniform(0.04, 0.12)) * _SHEEN

    def _small_drusen(self, eye, canvas, rng):
        """One to six hard drusen under 63 um: common after 50 and not age-related macular degeneration."""
        bright = canvas.map("bright")
        for x, y in eye.points(rng, int(rng.integers(1, 7)), near_macula=0.5):
            blob(eye, bright, None, x, y, rng.uniform(0.0025, 0.0045), rng.uniform(0.4, 0.75))

    def _myelinated_fibres(self, eye, canvas, rng):
        """A white patch at the disc margin, feathered into thin streaks along the nerve fibres."""
        white = canvas.map("white")
        centre = math.pi / 2 * (1 if rng.random() < 0.5 else -1) + rng.normal(0, 0.3)
        for _ in range(int(rng.integers(30, 60))):
            a = centre + rng.normal(0, 0.22)
            d = eye.dd * rng.uniform(0.5, 1.3)
            x, y = eye.dx + d * math.cos(a), eye.dy + d * math.sin(a)
            blob(eye, white, None, x, y, eye.dd * rng.uniform(0.08, 0.16), rng.uniform(0.2, 0.45),
                 rng.uniform(0.1, 0.2), math.degrees(a))
