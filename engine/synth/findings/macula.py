"""Macular conditions: diabetic macular oedema, AMD (drusen, pigment, geographic atrophy, disciform
scar), epiretinal membrane, central serous chorioretinopathy."""
from __future__ import annotations

import math

import cv2
import numpy as np

from engine.synth.findings.common import blob
from engine.synth.findings.dr import HardExudates
from engine.synth.layer import Layer, register
from engine.synth.primitives import blur, box, channel_mean, ellipse, smooth_noise


@register
class MacularOedema(Layer):
    name = "macular_oedema"
    words = {"macular_oedema": ["macular oedema", "macular thickening", "macular edema"],
             **HardExudates.words}  # DME draws exudates too; one wording list for both layers

    def applies(self, case):
        return case.flag("dme")

    def draw(self, eye, canvas, rng):
        R = eye.R
        r = eye.dd * rng.uniform(0.5, 1.0)
        fxp, fyp = eye.px(eye.fx + rng.normal(0, 0.02), eye.fy + rng.normal(0, 0.02))
        sl = box(fxp, fyp, r * R * 2 + 4, eye.S)
        oed = np.zeros((sl[0].stop - sl[0].start, sl[1].stop - sl[1].start), np.float32)
        ellipse(oed, canvas.mask(self.name)[sl], fxp - sl[1].start, fyp - sl[0].start, r * R)
        canvas.map("white")[sl] += 0.25 * blur(oed, r * R * 0.3)
        # circinate ring of exudates round the leak
        m2 = canvas.mask("hard_exudates")
        cx, cy = eye.fx + rng.normal(0, 0.6) * eye.dd, eye.fy + rng.normal(0, 0.4) * eye.dd
        rr = eye.dd * rng.uniform(0.4, 0.8)
        bright = canvas.map("bright")
        for a in np.linspace(0, 2 * math.pi, int(rng.integers(14, 30)), endpoint=False):
            if rng.random() < 0.75:
                blob(eye, bright, m2, cx + rr * math.cos(a) + rng.normal(0, 0.01), cy + rr * math.sin(a) + rng.normal(0, 0.01),
                     0.008 * rng.uniform(0.6, 1.4), 1.0)
        canvas.add_finding(self.name, "macula", "centre-involving" if rng.random() < 0.6 else "non-centre-involving")
        canvas.add_finding("hard_exudates", "macula", "circinate ring")


@register
class AMD(Layer):
    name = "amd"
    words = {"drusen_hard": ["hard drusen", "small drusen"],
             "drusen_soft": ["soft drusen", "large confluent drusen"],
             "pigment_changes": ["pigmentary changes", "RPE pigment clumping"],
             "geographic_atrophy": ["geographic atrophy", "a sharply demarcated area of atrophy"],
             "cnv_scar": ["a disciform scar", "a choroidal neovascular scar"]}

    def applies(self, case):
        return case.flag("amd")

    def _around_fovea(self, eye, rng, spread):
        a = rng.random() * 2 * math.pi
        r = abs(rng.normal(0, spread * eye.dd))
        return eye.fx + r * math.cos(a), eye.fy + r * math.sin(a)

    def draw(self, eye, canvas, rng):
        stage = eye.case.amd_stage
        soft = stage > 0.35
        n = int(rng.integers(8, 40))
        name = "drusen_soft" if soft else "drusen_hard"
        m = canvas.mask(name)
        bright, dark = canvas.map("bright"), canvas.map("dark")
        for _ in range(n):
            x, y = self._around_fovea(eye, rng, 0.9)
            blob(eye, bright, m, x, y, (0.014 if soft else 0.006) * rng.uniform(0.6, 1.4), 0.7 if soft else 0.9)
        canvas.add_finding(name, "macula", "numerous" if n > 25 else "several")
        if stage > 0.5:
            m = canvas.mask("pigment_changes")
            for _ in range(int(rng.integers(3, 10))):
                x, y = self._around_fovea(eye, rng, 0.5)
                blob(eye, dark, m, x, y, 0.01 * rng.uniform(0.5, 1.5), 0.8, 0.6, rng.uniform(0, 180))
            canvas.add_finding("pigment_changes", "macula", "mild")
        if stage > 0.75:
            self._late(eye, canvas, rng)

    def _late(self, eye, canvas, rng):
        late = "geographic_atrophy" if rng.random() < 0.55 else "cnv_scar"
        R = eye.R
        r = eye.dd * rng.uniform(0.4, 0.9)
        cxp, cyp = eye.px(eye.fx + rng.normal(0, 0.02), eye.fy + rng.normal(0, 0.02))
        sl = box(cxp, cyp, r * R * 2 + 6, eye.S)
        tmp = np.zeros((sl[0].stop - sl[0].start, sl[1].stop - sl[1].start), np.float32)
        ellipse(tmp, canvas.mask(late)[sl], cxp - sl[1].start, cyp - sl[0].start, r * R, 1.0, rng.uniform(0.7, 1.0), rng.uniform(0, 180))
        if late == "geographic_atrophy":
            tmp = cv2.GaussianBlur(tmp, (0, 0), max(0.8, r * R * 0.06))
            canvas.map("bright")[sl] += 0.5 * tmp
            canvas.map("white")[sl] += 0.25 * tmp
        else:
            tmp = blur(tmp, max(0.8, r * R * 0.15))
            ring = tmp * (1 - tmp) * 4
            canvas.map("white")[sl] += 0.6 * tmp
            canvas.map("dark")[sl] += 0.5 * ring
            canvas.map("red")[sl] += 0.2 * ring
        canvas.add_finding(late, "macula", "advanced")


@register
class EpiretinalMembrane(Layer):
    name = "epiretinal_membrane"
    words = {"epiretinal_membrane": ["an epiretinal membrane", "a glistening cellophane sheen over the macula", "macular pucker"]}

    def applies(self, case):
        return case.flag("erm")

    def draw(self, eye, canvas, rng):
        R = eye.R
        r = eye.dd * rng.uniform(0.8, 1.5)
        cxp, cyp = eye.px(eye.fx + rng.normal(0, 0.03), eye.fy + rng.normal(0, 0.03))
        sl = box(cxp, cyp, r * R * 1.8 + 6, eye.S)
        h, w = sl[0].stop - sl[0].start, sl[1].stop - sl[1].start
        tmp = np.zeros((h, w), np.float32)
        ellipse(tmp, canvas.mask(self.name)[sl], cxp - sl[1].start, cyp - sl[0].start, r * R, 1.0,
                rng.uniform(0.6, 1.0), rng.uniform(0, 180))
        # cellophane sheen with fine wrinkle striae
        striae = np.exp(-np.abs(smooth_noise(rng, (h, w), max(4, int(60 * h / eye.S)), 1.0)) * 6.0)
        sheen = blur(tmp, r * R * 0.25) * (0.45 + 0.55 * striae)
        canvas.img[sl] += (sheen * rng.uniform(0.14, 0.26))[..., None] * np.array([0.85, 0.9, 0.9], np.float32)
        canvas.add_finding(self.name, "macula", "moderate" if rng.random() < 0.5 else "mild")


@register
class CentralSerous(Layer):
    """Central serous chorioretinopathy: a round, sharply bordered serous detachment at the macula,
    slightly darker and duller than the retina round it, with a faint bright rim."""
    name = "csc"
    words = {"serous_detachment": ["a serous macular detachment", "a round serous retinal detachment at the macula",
                                   "subretinal fluid at the macula"]}

    def applies(self, case):
        return case.flag("csc")

    def draw(self, eye, canvas, rng):
        R = eye.R
        r = eye.dd * rng.uniform(0.5, 1.1)
        cxp, cyp = eye.px(eye.fx + rng.normal(0, 0.15) * eye.dd, eye.fy + rng.normal(0, 0.1) * eye.dd)
        sl = box(cxp, cyp, r * R * 1.5 + 6, eye.S)
        tmp = np.zeros((sl[0].stop - sl[0].start, sl[1].stop - sl[1].start), np.float32)
        ellipse(tmp, canvas.mask("serous_detachment")[sl], cxp - sl[1].start, cyp - sl[0].start, r * R, 1.0,
                rng.uniform(0.8, 1.0), rng.uniform(0, 180))
        soft = cv2.GaussianBlur(tmp, (0, 0), max(0.7, r * R * 0.06))
        rim = np.clip(soft * (1 - soft) * 4, 0, 1)
        sub = canvas.img[sl]
        lum = channel_mean(sub)[..., None]
        depth = rng.uniform(0.15, 0.35)
        sub[:] = sub * (1 - depth * soft[..., None]) + lum * (depth * 0.5) * soft[..., None]  # duller, greyer fluid
        sub += (rim * rng.uniform(0.04, 0.1))[..., None] * np.array([1.0, 0.95, 0.85], np.float32)
        if rng.random() < 0.4:  # a pinpoint leak / RPE spot inside
            blob(eye, canvas.map("bright"), None, (cxp - eye.cx) / R + rng.normal(0, 0.2) * r,
                 (cyp - eye.cy) / R + rng.normal(0, 0.2) * r, 0.006, 0.5)
        canvas.add_finding("serous_detachment", "macula", "moderate" if r > 0.8 * eye.dd else "small")
