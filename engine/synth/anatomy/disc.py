"""Optic disc and cup: rim colour, physiological or glaucomatous cup, tilt, peripapillary atrophy,
oedema and pallor. All drawing happens in a box round the disc."""
from __future__ import annotations

import cv2
import numpy as np

from engine.synth.layer import Layer, register
from engine.synth.primitives import blur, box, channel_max, ellipse, rgb


@register
class Disc(Layer):
    name = "disc"
    words = {
        "enlarged_cup": ["an enlarged optic cup", "increased cupping of the optic disc", "a large cup with a thin neuroretinal rim"],
        "peripapillary_atrophy": ["peripapillary atrophy", "a temporal peripapillary atrophic crescent"],
        "tilted_disc": ["a tilted optic disc", "an oblique disc insertion"],
        "disc_pallor": ["optic disc pallor", "a pale optic disc"],
        "disc_oedema": ["optic disc swelling", "disc oedema with blurred margins"],
    }
    params = {
        "size": (1.0, 1.0),              # disc radius scale (v2: real discs vary in size)
        "rim_colours": ((1.0, 0.7, 0.45), (1.0, 0.7, 0.45)),  # rim colour drawn between these two
        "rim_brightness": (1.0, 1.0),
        "ecc": (0.88, 1.0),              # horizontal / vertical axis ratio
        "cup_alpha": (0.5, 0.85),        # cup pallor (how much of the pale cup colour shows)
        "glaucoma_cup_alpha": (0.75, 0.95),  # v1 drew glaucomatous cups paler: a brightness cue real eyes lack
        "glaucoma_cup_offset": 0.12,     # temporal cup displacement (x disc radius)
        "glaucoma_cup_width": (1.0, 1.0),  # horizontal / vertical cup ratio in glaucoma (< 1: vertically elongated)
        "glaucoma_cup_drop": (0.0, 0.0),  # cup centre shifted towards a pole (inferior/superior rim thinning)
        "normal_cup_width": (1.0, 1.0),
        "p_ppa_normal": 0.0,             # peripapillary atrophy in eyes without myopia or glaucoma
        "p_ppa_glaucoma": 0.35,
        "margin_soft": None,             # None: v1's fixed sharp kernel; (lo, hi): disc margin sigma x radius
        "cup_soft": None,                # (lo, hi): cup margin sigma x cup radius (real cups slope, no step)
        "glaucoma_cup_soft": None,       # (lo, hi): glaucomatous cups have steep, sharp walls
        "glow": (0.0, 0.0),              # brightening round the disc (real discs glow into the retina)
    }

    def draw(self, eye, canvas, rng):
        case, S, p = eye.case, eye.S, self.p
        myopia, glauc = case.flag("pathologic_myopia"), case.flag("glaucoma")
        dxp, dyp = eye.disc_px
        tilt = myopia and rng.random() < 0.7
        d_ax = eye.disc_radius_px * rng.uniform(*p["size"])
        ecc = rng.uniform(0.6, 0.75) if tilt else rng.uniform(*p["ecc"])
        ang = rng.uniform(-20, 20)
        cdr = case.cdr
        ppa = (myopia and rng.random() < 0.85) or (glauc and rng.random() < p["p_ppa_glaucoma"]) or \
            (not myopia and not glauc and rng.random() < p["p_ppa_normal"])
        sl = box(dxp, dyp, d_ax * (4.0 if ppa else (1.6 if p["glow"][1] == 0 else 3.0)) + 8, S)
        ox, oy = sl[1].start, sl[0].start
        h, w = sl[0].stop - oy, sl[1].stop - ox
        disc_map = np.zeros((h, w), np.float32)
        cup_map = np.zeros((h, w), np.float32)
        ellipse(disc_map, None, dxp - ox, dyp - oy, d_ax * ecc, 1.0, 1 / ecc, ang)
        if glauc:
            cup_w = rng.uniform(*p["glaucoma_cup_width"])
            drop = rng.uniform(*p["glaucoma_cup_drop"]) * (1 if rng.random() < 0.7 else -1)  # inferior pole more often
            off = p["glaucoma_cup_offset"]
        else:
            cup_w, drop, off = rng.uniform(*p["normal_cup_width"]), 0.0, 0.05
        cup_r = d_ax * cdr
        ccx, ccy = dxp + eye.tsign * d_ax * off, dyp + drop * d_ax
        ellipse(cup_map, None, ccx - ox, ccy - oy, max(0.5, cup_r * ecc * cup_w), 1.0, 1.05 / (ecc * cup_w), ang)
        canvas.state["disc"] = {"x": dxp, "y": dyp, "r": d_ax, "ecc": ecc, "ang": ang, "cup_x": ccx, "cup_y": ccy,
                                "cup_r": cup_r * 1.05, "cup_w": cup_w, "box": sl}
        k = max(3, int(d_ax * 0.12) | 1)  # real disc and cup margins are fairly sharp
        if p["margin_soft"] is None:
            disc_map = cv2.GaussianBlur(disc_map, (k, k), 0)
            cup_map = cv2.GaussianBlur(cup_map, (k * 2 + 1, k * 2 + 1), 0)
        else:
            disc_map = blur(disc_map, max(0.6, rng.uniform(*p["margin_soft"]) * d_ax))
            soft = p["glaucoma_cup_soft"] if glauc and p["glaucoma_cup_soft"] else p["cup_soft"]
            cup_map = blur(cup_map, max(0.6, rng.uniform(*soft) * cup_r))
        sub = canvas.img[sl]
        glow = rng.uniform(*p["glow"])
        if glow > 0:
            gx = np.exp(-((np.arange(w, dtype=np.float32) - (dxp - ox)) ** 2) / (2 * (0.9 * d_ax) ** 2))
            gy = np.exp(-((np.arange(h, dtype=np.float32) - (dyp - oy)) ** 2) / (2 * (0.9 * d_ax) ** 2))
            g = np.outer(gy, gx)  # separable Gaussian, ~0 at the box edge
            sub *= 1 + glow * g[..., None] * np.array([1.0, 1.1, 0.9], np.float32)
        if ppa:
            self._ppa(eye, canvas, rng, sub, sl, disc_map, d_ax, ecc, ang, k, myopia)
        if case.extras.get("disc_oedema"):
            disc_map = cv2.GaussianBlur(disc_map, (0, 0), d_ax * 0.35) * 1.1
            cup_map *= 0.3
            canvas.mask("disc_oedema")[sl][disc_map > 0.3] = 1
            canvas.add_finding("disc_oedema", "optic disc", "moderate")
        # real discs are orange-yellow to pink with a paler yellow-white cup; neither saturates, so the
        # cup-to-disc ratio stays visible
        c0, c1 = (np.array(c, np.float32) for c in p["rim_colours"])
        disc_col = (c0 + (c1 - c0) * rng.random()) * rng.uniform(0.92, 1.08, 3).astype(np.float32) * rng.uniform(*p["rim_brightness"])
        cup_col = np.array([1.05, 0.95, 0.72], np.float32) * rng.uniform(0.92, 1.05)
        if case.flag("optic_atrophy"):
            disc_col = np.array([1.3, 1.2, 1.05], np.float32)
            canvas.mask("disc_pallor")[sl][disc_map > 0.5] = 1
            canvas.add_finding("disc_pallor", "optic disc", "marked" if rng.random() < 0.5 else "moderate")
        if glauc:
            canvas.mask("enlarged_cup")[sl][cup_map > 0.5] = 1
            canvas.add_finding("enlarged_cup", "optic disc", f"cup-to-disc ratio {cdr:.1f}")
        if tilt:
            canvas.mask("tilted_disc")[sl][disc_map > 0.5] = 1
            canvas.add_finding("tilted_disc", "optic disc", "moderate")
        disc_in = disc_map > 0.5  # drawn without a random draw: the image's streams are unchanged
        canvas.structure("optic_disc")[sl] |= disc_in
        canvas.structure("optic_cup")[sl] |= disc_in & (cup_map > 0.5)
        da = rgb(disc_map * rng.uniform(0.8, 0.95))  # 3 channels: same values as [..., None], faster
        sub[:] = sub * (1 - da) + disc_col * rgb(channel_max(sub) * 0.3 + 0.8) * da
        ca = rgb((cup_map * disc_map) * rng.uniform(*p["glaucoma_cup_alpha" if glauc else "cup_alpha"]))
        sub[:] = sub * (1 - ca) + cup_col * ca

    def _ppa(self, eye, canvas, rng, sub, sl, disc_map, d_ax, ecc, ang, k, myopia):
        """Peripapillary atrophy: a pale crescent, mostly temporal to the disc."""
        dxp, dyp = eye.disc_px
        ox, oy = sl[1].start, sl[0].start
        ppa_map = np.zeros_like(disc_map)
        ext = rng.uniform(0.3, 1.0) * d_ax * (2.2 if myopia else 0.7)
        ellipse(ppa_map, None, dxp + eye.tsign * ext * 0.5 - ox, dyp - oy, d_ax * ecc + ext * 0.5, 1.0,
                (d_ax + ext * 0.25) / (d_ax * ecc + ext * 0.5), ang)
        ppa_map = cv2.GaussianBlur(ppa_map, (k, k), 0) * (1 - disc_map)
        canvas.mask("peripapillary_atrophy")[sl][ppa_map > 0.4] = 1
        col = np.array([0.95, 0.78, 0.6], np.float32) * rng.uniform(0.85, 1.05)
        a = rgb(ppa_map * rng.uniform(0.5, 0.85))
        sub[:] = sub * (1 - a) + col * a
        canvas.add_finding("peripapillary_atrophy", "temporal to the optic disc", "marked" if ext > d_ax else "mild")

