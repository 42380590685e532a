"""Hypertensive retinopathy and retinal vein occlusion: changes of the vessels and the haemorrhages,
spots and swelling they cause."""
from __future__ import annotations

import numpy as np

from engine.synth.anatomy.vessels import draw_tree, widened_veins
from engine.synth.case import QUADRANTS
from engine.synth.findings.common import record, scatter
from engine.synth.layer import Layer, register


@register
class HypertensiveVessels(Layer):
    """Arteriolar narrowing (the tree itself is grown narrower), copper/silver wiring, AV nicking.
    Must run between "vessels" and "vessel_composite"."""
    name = "hypertensive_vessels"
    words = {"arteriolar_narrowing": ["generalised arteriolar narrowing", "attenuated arterioles", "narrowed arteries"],
             "av_nicking": ["arteriovenous nicking", "AV nipping"],
             "copper_wiring": ["copper wiring of the arterioles"],
             "silver_wiring": ["silver wiring of the arterioles"]}

    def applies(self, case):
        return case.flag("hypertensive_retinopathy")

    def draw(self, eye, canvas, rng):
        S = eye.S
        va, vv = canvas.map("artery"), canvas.map("vein")
        canvas.mask("arteriolar_narrowing")[va > 0.2] = 1  # thin arteries draw faint at small sizes
        canvas.add_finding("arteriolar_narrowing", "diffuse", "moderate" if eye.artery_scale > 0.62 else "marked")
        if rng.random() < 0.5:
            wire = "copper_wiring" if rng.random() < 0.6 else "silver_wiring"
            wmap = np.zeros((S, S), np.float32)
            draw_tree(eye, [v for v in eye.vessels if v[0] == "artery"], None, wmap, None)
            canvas.mask(wire)[wmap > 0.2] = 1
            canvas.maps["wire"] = wmap
            canvas.state["wire_colour"] = np.array([0.95, 0.6, 0.35] if wire == "copper_wiring" else [0.9, 0.88, 0.85], np.float32)
            canvas.add_finding(wire, "arterioles", "moderate")
        if rng.random() < 0.8:
            ys, xs = np.nonzero((vv > 0.5) & (va > 0.5) & eye.fov)
            if len(ys):
                import cv2
                nick = canvas.map("nicking")
                m = canvas.mask("av_nicking")
                r = max(2, int(eye.dd * eye.R * 0.12))
                for i in rng.choice(len(ys), size=min(len(ys), 6), replace=False):
                    cv2.circle(m, (int(xs[i]), int(ys[i])), r, 1, -1)
                    cv2.circle(nick, (int(xs[i]), int(ys[i])), r, 0.75, -1)
                canvas.add_finding("av_nicking", "at arteriovenous crossings", "moderate")


@register
class HypertensiveLesions(Layer):
    name = "hypertensive_lesions"
    words = {"flame_haemorrhages": ["flame-shaped haemorrhages", "splinter haemorrhages", "flame hemorrhages"],
             "cotton_wool_spots": ["cotton-wool spots", "soft exudates", "cotton wool spots"]}

    def applies(self, case):
        return case.flag("hypertensive_retinopathy")

    def draw(self, eye, canvas, rng):
        if rng.random() < 0.5:
            pts = scatter(eye, canvas, rng, "flame_haemorrhages", canvas.map("red"), int(rng.integers(2, 7)), 0.03,
                          near_mac=0.0, flame=True)
            record(eye, canvas, rng, "flame_haemorrhages", pts, "few")
        if rng.random() < 0.45:
            pts = scatter(eye, canvas, rng, "cotton_wool_spots", canvas.map("white"), int(rng.integers(1, 4)), 0.03,
                          near_mac=0.0, ecc=0.7)
            record(eye, canvas, rng, "cotton_wool_spots", pts, "few")


@register
class VeinOcclusion(Layer):
    """Dilated veins (drawn wider by the vessels layer) and haemorrhages in the drained territory."""
    name = "vein_occlusion"
    words = {"vein_dilation": ["dilated tortuous veins", "venous dilation and tortuosity"],
             "flame_haemorrhages": ["flame-shaped haemorrhages", "splinter haemorrhages", "flame hemorrhages"],
             "dot_blot_haemorrhages": ["dot and blot haemorrhages", "intraretinal haemorrhages", "blot hemorrhages"],
             "cotton_wool_spots": ["cotton-wool spots", "soft exudates", "cotton wool spots"]}

    def applies(self, case):
        return case.flag("rvo")

    def draw(self, eye, canvas, rng):
        case = eye.case
        S = eye.S
        widen = widened_veins(eye)
        tmp = np.zeros((S, S), np.float32)
        draw_tree(eye, [v for v in eye.vessels if id(v[1]) in widen], tmp, None, None, widen)
        canvas.mask("vein_dilation")[tmp > 0.5] = 1
        red = canvas.map("red")
        quads = list(QUADRANTS) if case.crvo else [case.rvo_quadrant]
        for q in quads:
            scatter(eye, canvas, rng, "flame_haemorrhages", red, int(rng.integers(10, 20) if case.crvo else rng.integers(12, 30)),
                    0.035, quadrant=q, near_mac=0.0, flame=True, rmax=0.9)
            scatter(eye, canvas, rng, "dot_blot_haemorrhages", red, int(rng.integers(5, 12) if case.crvo else rng.integers(4, 12)),
                    0.016, quadrant=q, near_mac=0.0, rmax=0.9)
        where = "all four quadrants" if case.crvo else QUADRANTS[case.rvo_quadrant]
        canvas.add_finding("vein_dilation", where if case.crvo else
                           ("superotemporal" if case.rvo_quadrant[0] else "inferotemporal"), "marked")
        canvas.add_finding("flame_haemorrhages", where, "extensive")
        canvas.add_finding("dot_blot_haemorrhages", where, "extensive" if case.crvo else "moderate")
        if rng.random() < 0.5:
            pts = scatter(eye, canvas, rng, "cotton_wool_spots", canvas.map("white"), int(rng.integers(1, 5)), 0.03,
                          quadrant=case.rvo_quadrant, near_mac=0.0, ecc=0.7)
            record(eye, canvas, rng, "cotton_wool_spots", pts, "few")
