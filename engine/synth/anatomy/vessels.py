"""Retinal vessels: the tree (grown by the eye) drawn into vein / artery / reflex maps, then
composited as calibre-dependent absorption with a central light reflex."""
from __future__ import annotations

import cv2
import numpy as np

from engine.synth.layer import Layer, register
from engine.synth.primitives import SHIFT, blur, channel_max


def draw_tree(eye, vessels, vein, artery, reflex, widen=None, min_contrast=0.2):
    """Draw vessels as anti-aliased polyline runs of similar width. Thin vessels draw fainter (as in real
    photographs). ``widen`` maps id(points) -> width factor."""
    S, R = eye.S, eye.R
    mul = float(1 << SHIFT)
    for kind, pts, ws in vessels:
        target = vein if kind == "vein" else artery
        arr = np.asarray(pts, np.float64)
        ipts = np.round(np.stack([eye.cx + arr[:, 0] * R, eye.cy + arr[:, 1] * R], 1) * mul).astype(np.int32)
        # Python floats (same values): the run search below compares them one by one
        wpx = (np.asarray(ws) * R * (widen.get(id(pts), 1.0) if widen else 1.0)).tolist()
        i, n = 0, len(ipts)
        while i < n - 1:
            j = i + 1
            w0 = wpx[i]
            while j < n - 1 and abs(wpx[j] - w0) < 0.6:
                j += 1
            wn = w0 * 256.0 / S  # width normalised to a 256 px image so the look is size-independent
            val = 1.0 if wn >= 4.0 else min_contrast + (1 - min_contrast) * (wn / 4.0)
            cv2.polylines(target, [ipts[i:j + 1]], False, val, max(1, int(round(w0))), cv2.LINE_AA, SHIFT)
            if reflex is not None and w0 > 3.5:
                cv2.polylines(reflex, [ipts[i:j + 1]], False, 1.0, 1, cv2.LINE_AA, SHIFT)
            i = j


def widened_veins(eye):
    """Vein width factors for a vein occlusion: all veins (central) or the occluded branch's veins."""
    case = eye.case
    if not case.flag("rvo"):
        return {}
    widen = {}
    for kind, pts, _ in eye.vessels:
        if kind != "vein":
            continue
        x, y = pts[len(pts) // 2]
        if case.crvo or ((y < eye.fy) == case.rvo_quadrant[0] and (x - eye.dx) * eye.tsign > 0):
            widen[id(pts)] = 1.5
    return widen


@register
class Vessels(Layer):
    """Draws the tree into the "vein", "artery" and "reflex" maps; vessel_composite applies them."""
    name = "vessels"
    params = {"min_contrast": 0.2}

    def draw(self, eye, canvas, rng):
        draw_tree(eye, eye.vessels, canvas.map("vein"), canvas.map("artery"), canvas.map("reflex"),
                  widened_veins(eye), self.p["min_contrast"])


@register
class VesselComposite(Layer):
    name = "vessel_composite"
    params = {"strength": (0.55, 0.9), "reflex": (0.05, 0.18),
              "vein_absorb": (0.24, 0.6, 0.55), "artery_absorb": (0.1, 0.38, 0.35)}

    def draw(self, eye, canvas, rng):
        S = eye.S
        k = self.p
        s = rng.uniform(*k["strength"])
        vabs = np.array(k["vein_absorb"], np.float32) * s
        aabs = np.array(k["artery_absorb"], np.float32) * s
        vv = cv2.GaussianBlur(canvas.maps.pop("vein"), (3, 3), 0.6 * S / 512 + 0.3)
        va = cv2.GaussianBlur(canvas.maps.pop("artery"), (3, 3), 0.6 * S / 512 + 0.3)
        nick = canvas.maps.pop("nicking", None)
        if nick is not None:  # AV nicking: the vein is hidden where an artery crosses it
            vv = np.minimum(vv, 1 - nick)
        rcol = -rng.uniform(*k["reflex"]) * np.array([1.0, 1.3, 1.4], np.float32)  # central reflex brightens the axis
        absorb = cv2.transform(cv2.merge([vv, va, canvas.maps.pop("reflex")]), np.stack([vabs, aabs, rcol], 1).astype(np.float32))
        np.subtract(1.0, absorb, out=absorb)
        canvas.img *= absorb
        wire = canvas.maps.pop("wire", None)
        if wire is not None:
            canvas.blend(wire * 0.6, canvas.state["wire_colour"] * channel_max(canvas.img)[..., None])
        canvas.state["vessel_maps"] = (vv, va)


@register
class CupVessels(Layer):
    """Vessels leave the eye through the cup. Inside it they lie deeper: fainter, out of focus, and
    displaced from where they run on the rim, so they seem to bend where they climb the cup's wall.
    Real discs show the cup's edge by those bends, healthy or glaucomatous; renders without this layer
    show it by pallor alone (research/experiments.md, trial 65). Runs between ``vessels`` and
    ``vessel_composite``, on the vessel maps inside the disc's box; v1 and v2 do not draw it."""
    name = "cup_vessels"
    params = {
        "fade": (0.4, 0.7),      # share of a vessel's contrast lost inside the cup
        "focus": 0.08,           # blur inside the cup, x cup radius
        "shift": (0.1, 0.25),    # displacement inside the cup, x cup radius, mostly nasal
        "edge": 0.12,            # softness of the cup's edge, x cup radius
    }

    def draw(self, eye, canvas, rng):
        disc = canvas.state.get("disc")
        if disc is None or disc["cup_r"] < 1:
            return
        p, sl, r = self.p, disc["box"], disc["cup_r"]
        inside = blur(canvas.structure("optic_cup")[sl].astype(np.float32), max(0.6, p["edge"] * r))
        fade = rng.uniform(*p["fade"])
        angle = rng.normal(0.0, 0.6) + (0.0 if eye.tsign < 0 else np.pi)  # nasal: away from the temporal side
        shift = rng.uniform(*p["shift"]) * r
        move = np.float32([[1, 0, shift * np.cos(angle)], [0, 1, shift * np.sin(angle)]])
        for name in ("vein", "artery", "reflex"):
            m = canvas.maps.get(name)
            if m is None:
                continue
            sub = m[sl]
            deep = cv2.warpAffine(blur(sub, max(0.3, p["focus"] * r)), move, sub.shape[::-1],
                                  flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
            sub[:] = sub * (1 - inside) + deep * inside * (1 - fade)
