"""Diabetic retinopathy: microaneurysms, haemorrhages, exudates, cotton-wool spots, venous beading,
IRMA, new vessels, preretinal/vitreous haemorrhage and laser scars, by grade."""
from __future__ import annotations

import math

import numpy as np

from engine.synth.case import QUADRANTS
from engine.synth.findings.common import blob, record, scatter
from engine.synth.layer import Layer, register
from engine.synth.primitives import blur, polyline, random_walk

_QUADS = list(QUADRANTS)


class _DR(Layer):
    min_grade = 1

    def applies(self, case):
        return case.dr_grade >= self.min_grade

    def contrast(self, case, rng):
        """Early DR in real photographs is faint: per-image lesion contrast for grades 1-2."""
        lo = self.p.get("early_contrast", (0.4, 1.0))
        return float(rng.uniform(*lo)) if case.dr_grade <= 2 else 1.0


@register
class Microaneurysms(_DR):
    name = "microaneurysms"
    words = {"microaneurysms": ["microaneurysms", "scattered microaneurysms", "tiny red dots consistent with microaneurysms"]}
    params = {"counts": {1: (3, 10), 2: (8, 20), 3: (15, 30), 4: (10, 30)}, "radius": 0.006,
              "early_contrast": (0.4, 1.0), "dot_contrast": (0.6, 1.0)}

    def draw(self, eye, canvas, rng):
        g = eye.case.dr_grade
        n = int(rng.integers(*self.p["counts"][g]))
        gain = self.contrast(eye.case, rng)
        pts = scatter(eye, canvas, rng, self.name, canvas.map("red"), n, self.p["radius"], near_mac=0.6, val=gain,
                      contrast=self.p["dot_contrast"])
        record(eye, canvas, rng, self.name, pts, "few" if n < 8 else "several")


@register
class DotBlotHaemorrhages(_DR):
    name = "dot_blot_haemorrhages"
    min_grade = 2
    words = {"dot_blot_haemorrhages": ["dot and blot haemorrhages", "intraretinal haemorrhages", "blot hemorrhages"]}
    params = {"early_contrast": (0.4, 1.0), "radius": 0.014}

    def draw(self, eye, canvas, rng):
        red = canvas.map("red")
        if eye.case.dr_grade >= 3:  # severe NPDR: haemorrhages in all four quadrants (4-2-1 rule)
            n = int(rng.integers(8, 14))
            for q in _QUADS:
                scatter(eye, canvas, rng, self.name, red, n, 0.016, quadrant=q, near_mac=0.0, rmax=0.85)
            canvas.add_finding(self.name, "all four quadrants", "extensive")
        else:
            pts = scatter(eye, canvas, rng, self.name, red, int(rng.integers(3, 10)), self.p["radius"], near_mac=0.3,
                          val=self.contrast(eye.case, rng))
            record(eye, canvas, rng, self.name, pts, "moderate")


@register
class FlameHaemorrhages(_DR):
    """Flame haemorrhages of DR (hypertensive and vein-occlusion flames are drawn by their own layers)."""
    name = "flame_haemorrhages"
    min_grade = 2
    words = {"flame_haemorrhages": ["flame-shaped haemorrhages", "splinter haemorrhages", "flame hemorrhages"]}
    params = {"p": 0.6, "early_contrast": (0.4, 1.0)}

    def draw(self, eye, canvas, rng):
        if rng.random() >= self.p["p"]:
            return
        pts = scatter(eye, canvas, rng, self.name, canvas.map("red"), int(rng.integers(2, 6)), 0.03, near_mac=0.0,
                      flame=True, val=self.contrast(eye.case, rng))
        record(eye, canvas, rng, self.name, pts, "few")


@register
class HardExudates(_DR):
    name = "hard_exudates"
    min_grade = 2
    words = {"hard_exudates": ["hard exudates", "yellow lipid exudates", "hard exudate deposits"]}
    params = {"p": 0.6, "early_contrast": (0.4, 1.0), "p_ring": 0.0, "radius": 0.007}

    def draw(self, eye, canvas, rng):
        case = eye.case
        if rng.random() >= self.p["p"] and not case.flag("dme"):
            return
        bright = canvas.map("bright")
        gain = self.contrast(case, rng)
        if rng.random() < self.p["p_ring"]:  # v2: exudates often lie in a ring (circinate) round leaking vessels
            cx, cy = eye.points(rng, 1, near_macula=0.8, rmax=0.6)[0]
            rr = eye.dd * rng.uniform(0.25, 0.5)
            m = canvas.mask(self.name)
            for a in np.linspace(0, 2 * math.pi, int(rng.integers(10, 22)), endpoint=False):
                if rng.random() < 0.7:
                    blob(eye, bright, m, cx + rr * math.cos(a) + rng.normal(0, 0.01), cy + rr * math.sin(a) + rng.normal(0, 0.01),
                         0.006 * rng.uniform(0.6, 1.4), gain)
            canvas.add_finding(self.name, eye.location(cx, cy), "circinate ring")
            return
        pts = scatter(eye, canvas, rng, self.name, bright, int(rng.integers(5, 25)), self.p["radius"], near_mac=0.7, val=gain)
        record(eye, canvas, rng, self.name, pts, "scattered")


@register
class CottonWoolSpots(_DR):
    name = "cotton_wool_spots"
    min_grade = 2
    words = {"cotton_wool_spots": ["cotton-wool spots", "soft exudates", "cotton wool spots"]}
    params = {"p": 0.4}

    def draw(self, eye, canvas, rng):
        if rng.random() >= self.p["p"] and eye.case.dr_grade < 3:
            return
        pts = scatter(eye, canvas, rng, self.name, canvas.map("white"), int(rng.integers(1, 5)), 0.03, near_mac=0.0, ecc=0.7)
        record(eye, canvas, rng, self.name, pts, "few")


@register
class SevereNPDR(_DR):
    """Venous beading and intraretinal microvascular abnormalities (severe and proliferative DR)."""
    name = "severe_npdr"
    min_grade = 3
    words = {"venous_beading": ["venous beading", "beaded veins"],
             "irma": ["intraretinal microvascular abnormalities", "IRMA"]}

    def draw(self, eye, canvas, rng):
        kind = rng.random()
        red = canvas.map("red")
        if kind < 0.5:
            m = canvas.mask("venous_beading")
            veins = [v for v in eye.vessels if v[0] == "vein" and v[2][0] > 0.012][:3]
            for _, pts, ws in veins:
                for i in range(3, len(pts), 3):
                    x, y = pts[i]
                    if x * x + y * y < 0.8:  # beads: dark swellings along the vein
                        blob(eye, red, m, x, y, ws[i] * 0.9, 0.6)
            canvas.add_finding("venous_beading", "two quadrants", "moderate")
        if kind > 0.35:
            m = canvas.mask("irma")
            pts = eye.points(rng, int(rng.integers(1, 4)), near_macula=0.3)
            for x, y in pts:
                seg = random_walk(rng, eye.px(x, y), 8, 0.012 * eye.R, 0.9)
                polyline(red, m, seg, 0.8, max(1, int(0.004 * eye.R)))
            record(eye, canvas, rng, "irma", pts, "moderate")


@register
class ProliferativeDR(_DR):
    name = "proliferative_dr"
    min_grade = 4
    words = {"neovascularisation_disc": ["neovascularisation of the disc", "new vessels at the disc (NVD)"],
             "neovascularisation_elsewhere": ["neovascularisation elsewhere", "new vessels elsewhere (NVE)"],
             "preretinal_haemorrhage": ["a preretinal haemorrhage", "a boat-shaped preretinal haemorrhage"],
             "vitreous_haemorrhage": ["vitreous haemorrhage", "a vitreous bleed"]}

    def _neo(self, eye, canvas, rng, x, y, name, spread):
        m = canvas.mask(name)
        R = eye.R
        for _ in range(int(rng.integers(5, 10))):
            start = np.array(eye.px(x, y)) + rng.normal(0, spread * R * 0.4, 2)
            polyline(canvas.map("red"), m, random_walk(rng, start, 10, spread * 0.25 * R, 0.6), 0.9, int(0.003 * R))

    def draw(self, eye, canvas, rng):
        kind = rng.random()
        if kind < 0.45:
            self._neo(eye, canvas, rng, eye.dx, eye.dy, "neovascularisation_disc", eye.dd * 0.5)
            canvas.add_finding("neovascularisation_disc", "optic disc", "moderate")
        elif kind < 0.75:
            x, y = eye.points(rng, 1, rmin=0.35, rmax=0.75)[0]
            self._neo(eye, canvas, rng, x, y, "neovascularisation_elsewhere", eye.dd * 0.6)
            canvas.add_finding("neovascularisation_elsewhere", eye.location(x, y), "moderate")
        else:
            x, y = eye.points(rng, 1, rmin=0.2, rmax=0.6)[0]
            name = "preretinal_haemorrhage" if rng.random() < 0.6 else "vitreous_haemorrhage"
            big = np.zeros((eye.S, eye.S), np.float32)
            r = eye.dd * rng.uniform(0.8, 1.8) * (1.0 if name == "preretinal_haemorrhage" else 1.6)
            blob(eye, big, canvas.mask(name), x, y, r, 1.0, rng.uniform(0.6, 0.9), rng.uniform(0, 180))
            big = blur(big, max(1.0, r * eye.R * (0.1 if name == "preretinal_haemorrhage" else 0.5)))
            canvas.map("red")[:] += big * 1.1
            canvas.add_finding(name, eye.location(x, y), "moderate")


@register
class LaserScars(_DR):
    name = "laser_scars"
    min_grade = 4
    words = {"laser_scars": ["laser photocoagulation scars", "panretinal laser scars"]}

    def draw(self, eye, canvas, rng):
        if rng.random() >= 0.35:
            return
        m = canvas.mask(self.name)
        dark, white = canvas.map("dark"), canvas.map("white")
        for x, y in eye.points(rng, int(rng.integers(40, 120)), rmin=0.55, rmax=0.95):
            blob(eye, dark, m, x, y, 0.012, 0.8)
            blob(eye, white, None, x, y, 0.006, 0.5)
        canvas.add_finding(self.name, "periphery", "panretinal photocoagulation")
