"""Procedural colour fundus photograph renderer (Med-AIGC).

All geometry is sampled in normalised units (field-of-view radius = 1) so a seed gives the same
eye at every resolution; pixels are produced with vectorised numpy / OpenCV.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field

import cv2
import numpy as np

from engine.errors import VisionCLIPError
from engine.synth.schema import CONDITION_KEYS, parse_conditions


@dataclass
class SyntheticFundus:
    image: np.ndarray
    masks: dict = field(default_factory=dict)
    labels: dict = field(default_factory=dict)
    findings: list = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# case sampling: which conditions / grade / quality
# --------------------------------------------------------------------------------------------
_OTHER = ["amd", "glaucoma", "pathologic_myopia", "hypertensive_retinopathy", "rvo", "erm",
          "optic_atrophy", "cataract"]
_OTHER_P = np.array([0.16, 0.17, 0.14, 0.12, 0.1, 0.08, 0.06, 0.17])


def _sample_case(rng, parsed):
    lab = {"dr_grade": 0, "eye_side": "right" if rng.random() < 0.5 else "left"}
    for flag in CONDITION_KEYS.values():
        lab[flag] = 0
    keys = [k for k, _ in parsed]
    if not parsed:
        u = rng.random()
        if u < 0.30:
            keys = ["normal"]
        elif u < 0.60:
            keys = ["dr"]
            if rng.random() < 0.25:
                keys.append("dme")
            if rng.random() < 0.12:
                keys.append(str(rng.choice(["hypertensive_retinopathy", "cataract", "glaucoma"])))
        else:
            keys = [str(rng.choice(_OTHER, p=_OTHER_P / _OTHER_P.sum()))]
            if rng.random() < 0.15:
                extra = str(rng.choice(["cataract", "glaucoma", "erm", "amd", "hypertensive_retinopathy"]))
                if extra not in keys:
                    keys.append(extra)
        parsed = [(k, None) for k in keys]
    grade = None
    for k, g in parsed:
        if k == "dr":
            grade = g if g is not None else int(rng.choice([1, 2, 3, 4], p=[0.3, 0.35, 0.2, 0.15]))
    if "dme" in keys and not grade:
        grade = int(rng.choice([2, 3, 4], p=[0.5, 0.3, 0.2]))
    lab["dr_grade"] = int(grade or 0)
    for k in keys:
        if k in CONDITION_KEYS:
            lab[CONDITION_KEYS[k]] = 1
    if lab["is_dme"] and lab["dr_grade"] == 0:
        lab["is_dme"] = 0
    # quality
    q = rng.random()
    lab["quality_grade"] = "good" if q < 0.68 else ("usable" if q < 0.92 else "reject")
    if lab["is_cataract"] and lab["quality_grade"] == "good" and rng.random() < 0.7:
        lab["quality_grade"] = "usable"
    lab["is_fundus"] = 1
    lab["is_optic_disc_readable"] = 1
    lab["is_retina_readable"] = 1
    return lab


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
_GRIDS: dict = {}


def _grid(n):
    g = _GRIDS.get(n)
    if g is None:
        yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
        yy.setflags(write=False)
        xx.setflags(write=False)
        g = _GRIDS[n] = (yy, xx)
        if len(_GRIDS) > 16:
            _GRIDS.pop(next(iter(_GRIDS)))
    return g


def _blur(img, sigma):
    """Gaussian blur; large sigmas are done at reduced resolution (same look, a fraction of the cost)."""
    if sigma < 1.6:
        return cv2.GaussianBlur(img, (0, 0), sigma)
    h, w = img.shape[:2]
    f = 2 if sigma < 4 else (4 if sigma < 10 else 8)
    small = cv2.resize(img, (max(8, w // f), max(8, h // f)), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), max(0.5, (sigma * sigma - (f / 2) ** 2) ** 0.5 / f))
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _smooth_noise(rng, shape, cells, amp=1.0):
    """Smooth value noise: small random grid up-sampled with bicubic interpolation."""
    h, w = shape
    g = rng.standard_normal((cells, cells)).astype(np.float32)
    return cv2.resize(g, (w, h), interpolation=cv2.INTER_CUBIC) * amp


def _polar_noise(rng, S, cx, cy, unit, nth, rows, radial_scale, interp):
    """Noise sampled in polar coordinates around (cx, cy) px on a half-resolution grid: fine across
    angles (``nth`` cells round the circle), coarse along the radius, i.e. radial stripes.
    Returns (noise, radius in ``unit`` px, angle in radians) as (T, T) float32 arrays, T = max(64, S // 2)."""
    grid = rng.standard_normal((rows, nth + 3)).astype(np.float32)
    grid[:, -3:] = grid[:, :3]  # wrap round the circle
    T = max(64, S // 2)
    yt, xt = _grid(T)
    tsc = S / T
    ux = (xt * tsc - cx) / unit
    uy = (yt * tsc - cy) / unit
    ang = cv2.phase(ux, uy)
    mr = cv2.magnitude(ux, uy)
    noise = cv2.remap(grid, (ang * (nth / (2 * np.pi))).astype(np.float32), (mr * radial_scale).astype(np.float32),
                      interp, borderMode=cv2.BORDER_REFLECT)
    return noise, mr, ang


class _Ctx:
    """Per-image geometry and drawing state."""

    def __init__(self, rng, S):
        self.rng = rng
        self.S = S
        self.masks: dict = {}
        self.findings: list = []

    # unit coords (FOV radius 1, centred) -> pixels
    def px(self, x, y):
        return self.cx + x * self.R, self.cy + y * self.R

    def mask(self, name):
        m = self.masks.get(name)
        if m is None:
            m = np.zeros((self.S, self.S), np.uint8)
            self.masks[name] = m
        return m

    def location(self, x, y):
        """Anatomical location word for a unit-coordinate point."""
        dfx, dfy = x - self.fx, y - self.fy
        if math.hypot(dfx, dfy) < 0.35 * self.dd:
            return "fovea"
        if math.hypot(dfx, dfy) < 1.4 * self.dd:
            return "macula"
        if math.hypot(x - self.dx, y - self.dy) < 0.9 * self.dd:
            return "peripapillary"
        vert = "superior" if y < self.fy else "inferior"
        temporal = (x - (self.dx + self.fx) / 2) * self.tsign > 0
        if math.hypot(x, y) > 0.78:
            return f"{vert} periphery" if self.rng.random() < 0.5 else ("mid-periphery")
        return ("supero" if y < self.fy else "infero") + ("temporal" if temporal else "nasal")

    def add_finding(self, name, location, severity):
        for f in self.findings:
            if f["name"] == name:
                return
        self.findings.append({"name": name, "location": location, "severity": severity})


def _quadrant_points(ctx, n, quadrant=None, rmin=0.15, rmax=0.82, near_macula=0.0):
    rng = ctx.rng
    pts = []
    tries = 0
    while len(pts) < n and tries < n * 20:
        tries += 1
        if near_macula and rng.random() < near_macula:
            a = rng.random() * 2 * math.pi
            r = abs(rng.normal(0, 1.3 * ctx.dd))
            x, y = ctx.fx + r * math.cos(a), ctx.fy + r * math.sin(a)
        else:
            a = rng.random() * 2 * math.pi
            r = math.sqrt(rng.uniform(rmin ** 2, rmax ** 2))
            x, y = r * math.cos(a), r * math.sin(a)
        if math.hypot(x, y) > 0.9:
            continue
        if math.hypot(x - ctx.dx, y - ctx.dy) < 0.6 * ctx.dd:
            continue
        if quadrant is not None:
            sup = y < ctx.fy
            tmp = (x - (ctx.dx + ctx.fx) / 2) * ctx.tsign > 0
            if (sup, tmp) != quadrant:
                continue
        pts.append((x, y))
    return pts


# --------------------------------------------------------------------------------------------
# vessel tree
# --------------------------------------------------------------------------------------------
def _grow_vessels(ctx, artery_scale=1.0, vein_scale=1.0, tortuosity=1.0):
    """Grow artery and vein trees from the disc. Returns list of vessels:
    (kind, [(x, y), ...] unit coords, [width_unit ...])."""
    rng = ctx.rng
    vessels = []
    t = ctx.tsign
    step = 0.028
    base_w = 0.024 * rng.uniform(0.72, 0.95)  # vein trunk width in unit coords (~ 1/12-1/16 disc diameter)
    stack = []
    # main trunks: (kind, x, y, heading, width, orbit)
    for kind, wscale in (("vein", vein_scale), ("artery", artery_scale * 0.72)):
        for sup in (-1, 1):
            ang = math.radians(rng.uniform(55, 80))
            h = math.atan2(sup * math.sin(ang), t * math.cos(ang))
            off = rng.uniform(-0.25, 0.25) * ctx.dd * 0.5
            stack.append((kind, ctx.dx + off, ctx.dy + sup * 0.05 * ctx.dd, h, base_w * wscale * rng.uniform(0.92, 1.08), sup, 0))
            ang2 = math.radians(rng.uniform(35, 75))
            h2 = math.atan2(sup * math.sin(ang2), -t * math.cos(ang2))
            stack.append((kind, ctx.dx + off, ctx.dy, h2, base_w * wscale * rng.uniform(0.6, 0.75), False, 0))
        # small macular branches direct from disc
        h3 = math.atan2(rng.uniform(-0.2, 0.2), t)
        stack.append((kind, ctx.dx, ctx.dy, h3, base_w * wscale * 0.45, False, 1))
    minw = 0.0028
    arc_a = rng.uniform(1.3, 1.9) * ctx.dd
    arc_b = rng.uniform(0.8, 1.2) * ctx.dd
    arc_c = rng.uniform(0.0, 0.15)
    while stack:
        kind, x, y, h, w, orbit, depth = stack.pop()
        pts = [(x, y)]
        ws = [w]
        dh = 0.0
        length = 0.0
        next_branch = rng.exponential(0.15 if depth < 2 else 0.22) + 0.05
        maxlen = 2.6 if depth == 0 else (rng.uniform(0.35, 1.2) if orbit is not None else rng.uniform(0.12, 0.35))
        while True:
            if orbit:
                # temporal arcade: follow v(s) = A tanh(s / B) away from the disc, curving around the fovea
                sx = max(0.0, (x - ctx.dx) * t)
                sup = orbit
                slope = arc_a / arc_b / math.cosh(min(sx / arc_b, 20.0)) ** 2 - arc_c
                target = math.atan2(sup * slope, t)
                d = (target - h + math.pi) % (2 * math.pi) - math.pi
                h += 0.3 * d
            dh = 0.75 * dh + rng.normal(0, 0.045 * tortuosity)
            h += dh
            x += step * math.cos(h)
            y += step * math.sin(h)
            length += step
            w *= 0.996 if depth == 0 else 0.993
            pts.append((x, y))
            ws.append(w)
            if x * x + y * y > 1.08 or length > maxlen or w < minw:
                break
            if depth and (x - ctx.fx) ** 2 + (y - ctx.fy) ** 2 < (0.45 * ctx.dd) ** 2:
                break
            if length > next_branch and depth < 5:
                next_branch = length + rng.exponential(0.14 + 0.06 * depth) + 0.05
                frac = rng.uniform(0.4, 0.75)
                wc = w * frac
                w = (max(w ** 3 - wc ** 3, (w * 0.5) ** 3)) ** (1 / 3)
                if wc >= minw:
                    side = 1 if rng.random() < 0.5 else -1
                    child = False
                    if orbit:  # arcade branches: mostly to the periphery, small ones towards the fovea
                        rx, ry = x - ctx.fx, y - ctx.fy
                        cross = math.cos(h) * ry - math.sin(h) * rx
                        outward = rng.random() < 0.65
                        side = (1 if cross > 0 else -1) * (1 if outward else -1)
                        if not outward:
                            wc *= 0.7
                            child = None  # short macular branch
                    hc = h + side * math.radians(rng.uniform(40, 75))
                    stack.append((kind, x, y, hc, wc, child, depth + 1))
        if len(pts) > 1:
            vessels.append((kind, pts, ws))
    return vessels


def _draw_vessels(ctx, vessels, img_v, img_a, reflex, widen=None):
    S, R = ctx.S, ctx.R
    sh = 4
    mul = float(1 << sh)
    for kind, pts, ws in vessels:
        target = img_v if kind == "vein" else img_a
        arr = np.asarray(pts, np.float64)
        pxs = np.empty_like(arr)
        pxs[:, 0] = ctx.cx + arr[:, 0] * R
        pxs[:, 1] = ctx.cy + arr[:, 1] * R
        ipts = np.round(pxs * mul).astype(np.int32)
        wpx = np.asarray(ws) * R * (widen.get(id(pts), 1.0) if widen else 1.0)
        # draw in runs of similar width
        i = 0
        n = len(ipts)
        while i < n - 1:
            j = i + 1
            w0 = wpx[i]
            while j < n - 1 and abs(wpx[j] - w0) < 0.6:
                j += 1
            th = max(1, int(round(w0)))
            wn = w0 * 256.0 / S  # width normalised to a 256 px image so the look is size-independent
            val = 1.0 if wn >= 4.0 else 0.2 + 0.8 * (wn / 4.0)  # thin vessels: less contrast
            cv2.polylines(target, [ipts[i:j + 1]], False, val, th, cv2.LINE_AA, sh)
            if w0 > 3.5:
                cv2.polylines(reflex, [ipts[i:j + 1]], False, 1.0, 1, cv2.LINE_AA, sh)
            i = j


# --------------------------------------------------------------------------------------------
# lesion primitives (draw into float map + mask)
# --------------------------------------------------------------------------------------------
def _blob(ctx, fmap, mask, x, y, rad_u, val=1.0, ecc=1.0, ang=0.0):
    px, py = ctx.px(x, y)
    r = max(0.6, rad_u * ctx.R)
    axes = (max(1, int(round(r * 16))), max(1, int(round(r * ecc * 16))))
    c = (int(round(px * 16)), int(round(py * 16)))
    cv2.ellipse(fmap, c, axes, ang, 0, 360, float(val), -1, cv2.LINE_AA, 4)
    if mask is not None:
        cv2.ellipse(mask, c, axes, ang, 0, 360, 1, -1, cv2.LINE_8, 4)


# --------------------------------------------------------------------------------------------
# main renderer
# --------------------------------------------------------------------------------------------
def _rng_for(seed, size, parsed):
    key = ",".join(f"{k}:{g}" for k, g in parsed).encode()
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, (int(seed) >> 32) & 0xFFFFFFFF, zlib.crc32(key)])


def render_fundus(seed: int, size: int = 512, conditions: list[str] | None = None) -> SyntheticFundus:
    """Render one synthetic colour fundus photograph. Deterministic in (seed, size, conditions)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise VisionCLIPError(f"Seed must be a non-negative integer, got {seed!r}.")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 64 <= size <= 4096:
        raise VisionCLIPError(f"Image size must be an integer from 64 to 4096, got {size!r}.")
    parsed = parse_conditions(conditions)
    rng = _rng_for(seed, size, parsed)
    labels = _sample_case(rng, parsed)
    S = int(size)
    ctx = _Ctx(rng, S)
    lab = labels

    # ---------------- geometry ----------------
    crop = rng.random() < 0.3
    ctx.R = S * (rng.uniform(0.54, 0.62) if crop else rng.uniform(0.455, 0.5))
    ctx.cx = S / 2 + rng.normal(0, 0.01) * S
    ctx.cy = S / 2 + rng.normal(0, 0.01) * S
    ctx.tsign = -1 if lab["eye_side"] == "right" else 1  # temporal direction (towards fovea) in x
    myopia = lab["is_pathologic_myopia"]
    ctx.dd = rng.uniform(0.29, 0.37) * (1.1 if myopia else 1.0)  # disc diameter (unit): ~1/3 of the field radius in real 45-degree photos
    ctx.fy = rng.normal(0.03, 0.04)
    sep = 2.5 * ctx.dd * rng.uniform(0.9, 1.1) * (1.1 if myopia else 1.0)
    ctx.fx = ctx.tsign * sep * (rng.uniform(0.3, 0.55) if rng.random() < 0.8 else rng.uniform(0.1, 0.3))
    ctx.dx = ctx.fx - ctx.tsign * sep
    ctx.dy = ctx.fy - rng.uniform(0.02, 0.12) * ctx.dd * 1.5
    R = ctx.R
    yy, xx = _grid(S)
    ux = (xx - ctx.cx) * (1.0 / R)
    uy = (yy - ctx.cy) * (1.0 / R)
    rr2 = ux * ux + uy * uy
    fov = rr2 <= 1.0
    if crop:
        ch = int(rng.uniform(0.0, 0.06) * S)
        if ch > 0:
            fov[:ch] = False
            fov[S - ch:] = False
    ctx.fov = fov
    # low-resolution grid for smooth fields (background, illumination), up-sampled once
    L = max(32, S // 4)
    yl, xl = _grid(L)
    sc = S / L
    uxl = (xl * sc + (sc - 1) / 2 - ctx.cx) / R
    uyl = (yl * sc + (sc - 1) / 2 - ctx.cy) / R
    rl = np.sqrt(uxl * uxl + uyl * uyl)

    def up(f):
        return cv2.resize(f, (S, S), interpolation=cv2.INTER_LINEAR)

    # ---------------- background ----------------
    pig = rng.beta(2.0, 2.2)  # 0 blond .. 1 dark
    if myopia:
        pig = max(pig, rng.uniform(0.45, 0.8))
    base = np.array([0.95 - 0.45 * pig, 0.6 - 0.34 * pig, 0.36 - 0.24 * pig], np.float32)
    base *= rng.uniform(0.9, 1.08, 3).astype(np.float32)
    low = _smooth_noise(rng, (L, L), 5, 0.05) + _smooth_noise(rng, (L, L), 24, 0.018)
    # choroidal tessellation
    tess = 0.6 * rng.beta(1.0, 5.0) * (1 - pig * 0.6) * (rng.random() < 0.5)
    if myopia:
        tess = rng.uniform(0.55, 1.0)
    lum = 1.0 + low
    if tess > 0.05:
        # choroidal vessels: noise sampled in polar coordinates -> radially elongated stripes
        nth = int(rng.integers(90, 150))
        n1, mr, _ = _polar_noise(rng, S, ctx.cx, ctx.cy, R, nth, 5, 3.0, cv2.INTER_CUBIC)
        # contour lines of isotropic noise form a reticular network, slightly stretched radially
        n1 *= 0.5
        T = n1.shape[0]
        n1 += _smooth_noise(rng, (T, T), int(rng.integers(22, 34)), 1.0)
        ridge = np.exp(-(n1 ** 2) * 7.0)  # choroidal vessels (orange) vs dark spaces
        rad = np.clip(mr * 1.2, 0.3, 1.0)
        tmap = up(tess * (ridge - 0.45) * rad)
        if myopia:
            ctx.mask("tessellation")[fov] = 1
            ctx.add_finding("tessellation", "diffuse", "marked" if tess > 0.8 else "moderate")
    else:
        tmap = None
    # macula
    fxp, fyp = ctx.px(ctx.fx, ctx.fy)
    d2f = ((uxl - ctx.fx) ** 2 + (uyl - ctx.fy) ** 2) / ctx.dd ** 2
    mac = (0.6 * np.exp(-d2f / 1.2) + 0.6 * np.exp(-d2f / 0.12)).astype(np.float32)
    macd = rng.uniform(0.12, 0.3)
    # nerve fibre sheen: brighter along arcades near disc
    dxp, dyp = ctx.px(ctx.dx, ctx.dy)
    d2d = ((uxl - ctx.dx) ** 2 + (uyl - ctx.dy) ** 2) / ctx.dd ** 2
    sheen = np.exp(-d2d / 5.0) * rng.uniform(0.05, 0.14)
    lum = lum - macd * mac + sheen
    halo = np.exp(-d2d / rng.uniform(0.5, 1.2)) * rng.uniform(0.15, 0.35)
    bgl = np.empty((L, L, 3), np.float32)
    bgl[..., 0] = base[0] * lum * (1 + 0.6 * halo)
    bgl[..., 1] = base[1] * lum * (1 - 0.15 * mac) * (1 + 0.9 * halo)  # macular pigment absorbs G/B
    bgl[..., 2] = base[2] * lum * (1 - 0.1 * mac) * (1 + 0.8 * halo)
    img = up(bgl)
    if tmap is not None:
        img *= (1 + tmap[..., None] * np.array([0.6, 0.45, 0.3], np.float32))
    # retinal nerve fibre layer: fine bright striations radiating from the disc, strongest along the
    # arcades above and below it (real photos show them; a smooth background does not)
    nfl = rng.uniform(0.03, 0.09) * (1 - 0.5 * pig)
    if nfl > 0.02:
        nth = int(rng.integers(260, 420))
        stri, mr, ang = _polar_noise(rng, S, dxp, dyp, ctx.dd * R, nth, 6, 0.6, cv2.INTER_LINEAR)
        env = np.exp(-((mr - 1.6) ** 2) / 1.8) * (0.35 + 0.65 * np.abs(np.sin(ang)))
        img *= 1 + up((nfl * np.clip(stri, -2, 2) * env).astype(np.float32))[..., None]

    # ---------------- optic disc ----------------
    tilt = myopia and rng.random() < 0.7
    d_ax = ctx.dd * R / 2
    ecc = rng.uniform(0.88, 1.0) if not tilt else rng.uniform(0.6, 0.75)
    disc_ang = rng.uniform(-20, 20) + (90 if rng.random() < 0.5 else 0) * (1 if tilt else 0) * 0
    oedema = 0
    glauc = lab["is_glaucoma"]
    atrophy = lab["is_optic_atrophy"]
    cdr = rng.uniform(0.6, 0.88) if glauc else rng.uniform(0.2, 0.45)
    disc_map = np.zeros((S, S), np.float32)
    cup_map = np.zeros((S, S), np.float32)
    c16 = (int(round(dxp * 16)), int(round(dyp * 16)))
    cv2.ellipse(disc_map, c16, (int(d_ax * ecc * 16), int(d_ax * 16)), disc_ang, 0, 360, 1.0, -1, cv2.LINE_AA, 4)
    cup_off = ctx.tsign * d_ax * (0.05 if not glauc else 0.12)
    cupc = (int(round((dxp + cup_off) * 16)), int(round(dyp * 16)))
    cup_r = d_ax * cdr
    cv2.ellipse(cup_map, cupc, (max(1, int(cup_r * ecc * 16)), max(1, int(cup_r * 1.05 * 16))), disc_ang, 0, 360, 1.0, -1, cv2.LINE_AA, 4)
    k = max(3, int(d_ax * 0.12) | 1)  # real disc and cup margins are fairly sharp
    ppa = myopia and rng.random() < 0.85 or (glauc and rng.random() < 0.35)
    hb = int(d_ax * (4.0 if ppa else 1.6) + 8)
    dsl = (slice(max(0, int(dyp) - hb), min(S, int(dyp) + hb)), slice(max(0, int(dxp) - hb), min(S, int(dxp) + hb)))
    disc_map[dsl] = cv2.GaussianBlur(disc_map[dsl], (k, k), 0)
    cup_map[dsl] = cv2.GaussianBlur(cup_map[dsl], (k * 2 + 1, k * 2 + 1), 0)
    # peripapillary atrophy (myopia, glaucoma sometimes)
    if ppa:
        ppa_map = np.zeros((S, S), np.float32)
        ext = rng.uniform(0.3, 1.0) * d_ax * (2.2 if myopia else 0.7)
        pc = (int(round((dxp + ctx.tsign * ext * 0.5) * 16)), c16[1])
        cv2.ellipse(ppa_map, pc, (int((d_ax * ecc + ext * 0.5) * 16), int((d_ax + ext * 0.25) * 16)), disc_ang, 0, 360, 1.0, -1, cv2.LINE_AA, 4)
        ppa_map = cv2.GaussianBlur(ppa_map[dsl], (k, k), 0) * (1 - disc_map[dsl])
        m = ctx.mask("peripapillary_atrophy")
        m[dsl][ppa_map > 0.4] = 1
        col = np.array([0.95, 0.78, 0.6], np.float32) * rng.uniform(0.85, 1.05)
        a = ppa_map[..., None] * rng.uniform(0.5, 0.85)
        img[dsl] = img[dsl] * (1 - a) + col * a
        ctx.add_finding("peripapillary_atrophy", "temporal to the optic disc", "marked" if ext > d_ax else "mild")
    if lab["is_hypertensive_retinopathy"] and rng.random() < 0.2:
        oedema = 1
    if oedema:
        disc_map[dsl] = cv2.GaussianBlur(disc_map[dsl], (0, 0), d_ax * 0.35) * 1.1
        cup_map *= 0.3
        ctx.mask("disc_oedema")[disc_map > 0.3] = 1
        ctx.add_finding("disc_oedema", "optic disc", "moderate")
    # real discs are orange-yellow with a paler yellow-white cup; neither saturates, so the cup-to-disc
    # ratio (the glaucoma sign) stays visible
    disc_col = np.array([1.0, 0.7, 0.45], np.float32) * rng.uniform(0.92, 1.08, 3).astype(np.float32)
    cup_col = np.array([1.05, 0.95, 0.72], np.float32) * rng.uniform(0.92, 1.05)
    if atrophy:
        disc_col = np.array([1.3, 1.2, 1.05], np.float32)
        ctx.mask("disc_pallor")[disc_map > 0.5] = 1
        ctx.add_finding("disc_pallor", "optic disc", "marked" if rng.random() < 0.5 else "moderate")
    if glauc:
        ctx.mask("enlarged_cup")[cup_map > 0.5] = 1
        ctx.add_finding("enlarged_cup", "optic disc", f"cup-to-disc ratio {cdr:.1f}")
    if tilt:
        ctx.mask("tilted_disc")[disc_map > 0.5] = 1
        ctx.add_finding("tilted_disc", "optic disc", "moderate")
    sub = img[dsl]
    da = disc_map[dsl][..., None] * rng.uniform(0.8, 0.95)
    sub[:] = sub * (1 - da) + disc_col * (sub.max(axis=2, keepdims=True) * 0.3 + 0.8) * da
    ca = cup_map[dsl][..., None] * disc_map[dsl][..., None] * (rng.uniform(0.75, 0.95) if glauc else rng.uniform(0.5, 0.85))
    sub[:] = sub * (1 - ca) + cup_col * ca

    # ---------------- vessels ----------------
    htn = lab["is_hypertensive_retinopathy"]
    rvo = lab["is_rvo"]
    art_scale = rng.uniform(0.55, 0.7) if htn else 1.0
    vessels = _grow_vessels(ctx, artery_scale=art_scale, vein_scale=1.0,
                            tortuosity=rng.uniform(0.7, 1.3) * (1.4 if htn else 1.0))
    widen = {}
    rvo_quadrant = None
    crvo = False
    if rvo:
        crvo = rng.random() < 0.35
        if crvo:
            for kind, pts, ws in vessels:
                if kind == "vein":
                    widen[id(pts)] = 1.5
        else:
            rvo_quadrant = (bool(rng.random() < 0.5), True)  # usually temporal branch
            for kind, pts, ws in vessels:
                if kind == "vein":
                    x, y = pts[len(pts) // 2]
                    if (y < ctx.fy) == rvo_quadrant[0] and (x - ctx.dx) * ctx.tsign > 0:
                        widen[id(pts)] = 1.5
    vv = np.zeros((S, S), np.float32)
    va = np.zeros((S, S), np.float32)
    reflex = np.zeros((S, S), np.float32)
    _draw_vessels(ctx, vessels, vv, va, reflex, widen)
    if htn:
        ctx.mask("arteriolar_narrowing")[va > 0.2] = 1  # thin arteries draw faint at small sizes
        ctx.add_finding("arteriolar_narrowing", "diffuse", "moderate" if art_scale > 0.62 else "marked")
        if rng.random() < 0.5:
            wire = "copper_wiring" if rng.random() < 0.6 else "silver_wiring"
            reflex_a = np.zeros((S, S), np.float32)
            _draw_vessels(ctx, [v for v in vessels if v[0] == "artery"], reflex_a, reflex_a, reflex_a)
            ctx.mask(wire)[reflex_a > 0.2] = 1
            ctx.add_finding(wire, "arterioles", "moderate")
            wire_col = np.array([0.95, 0.6, 0.35] if wire == "copper_wiring" else [0.9, 0.88, 0.85], np.float32)
            va_wire = reflex_a
        else:
            va_wire = None
    else:
        va_wire = None
    # vessel colouring (multiplicative absorption)
    vess_str = rng.uniform(0.55, 0.9)
    vabs = np.array([0.24, 0.6, 0.55], np.float32) * vess_str
    aabs = np.array([0.1, 0.38, 0.35], np.float32) * vess_str
    vv = cv2.GaussianBlur(vv, (3, 3), 0.6 * S / 512 + 0.3)
    va = cv2.GaussianBlur(va, (3, 3), 0.6 * S / 512 + 0.3)
    # AV nicking: notch veins where arteries cross
    if htn and rng.random() < 0.8:
        cross = (vv > 0.5) & (va > 0.5) & fov
        ys, xs = np.nonzero(cross)
        if len(ys):
            sel = rng.choice(len(ys), size=min(len(ys), 6), replace=False)
            m = ctx.mask("av_nicking")
            for i in sel:
                r_ = max(2, int(ctx.dd * R * 0.12))
                cv2.circle(m, (int(xs[i]), int(ys[i])), r_, 1, -1)
                cv2.circle(vv, (int(xs[i]), int(ys[i])), r_, 0.25, -1)
            ctx.add_finding("av_nicking", "at arteriovenous crossings", "moderate")
    if rvo:
        vd = ctx.mask("vein_dilation")
        vd[(vv > 0.5)] = 1 if crvo else 0
        if not crvo:
            tmpv = np.zeros((S, S), np.float32)
            _draw_vessels(ctx, [v for v in vessels if id(v[1]) in widen], tmpv, tmpv, tmpv, widen)
            vd[tmpv > 0.5] = 1
        ctx.add_finding("vein_dilation", "all four quadrants" if crvo else
                        ("superotemporal" if rvo_quadrant[0] else "inferotemporal"), "marked")
    refl_s = rng.uniform(0.05, 0.18)
    rcol = -refl_s * np.array([1.0, 1.3, 1.4], np.float32)  # central light reflex brightens the vessel axis
    absorb = cv2.transform(cv2.merge([vv, va, reflex]), np.stack([vabs, aabs, rcol], 1).astype(np.float32))
    np.subtract(1.0, absorb, out=absorb)
    img *= absorb
    if va_wire is not None:
        a = va_wire[..., None] * 0.6
        img[:] = img * (1 - a) + wire_col * img.max(axis=2, keepdims=True) * a

    # ---------------- lesions ----------------
    red = np.zeros((S, S), np.float32)      # haemorrhage absorption
    bright = np.zeros((S, S), np.float32)   # exudate / drusen yellow
    white = np.zeros((S, S), np.float32)    # cotton wool / fibrosis
    dark = np.zeros((S, S), np.float32)     # pigment
    g = lab["dr_grade"]
    quads = [(s, t_) for s in (True, False) for t_ in (True, False)]
    qname = {(True, True): "superotemporal", (True, False): "superonasal",
             (False, True): "inferotemporal", (False, False): "inferonasal"}

    def scatter(name, fmap, n, radius, quadrant=None, near_mac=0.5, ecc=1.0, flame=False, val=1.0, rmax=0.82, irregular=None):
        if irregular is None:
            irregular = "haemorrhage" in name
        pts = _quadrant_points(ctx, n, quadrant, near_macula=near_mac, rmax=rmax)
        m = ctx.mask(name)
        for x, y in pts:
            rad = radius * rng.uniform(0.6, 1.4)
            ang = 0.0
            e = ecc
            if flame:
                ang = math.degrees(math.atan2(y - ctx.dy, x - ctx.dx))
                e = rng.uniform(0.25, 0.45)
                v = val * rng.uniform(0.6, 1.0)
                for k in range(3):  # feathered, tapered streak along the nerve-fibre direction
                    off = rad * 0.25 * k
                    _blob(ctx, fmap, m if k == 0 else None, x - off * math.cos(math.radians(ang)), y - off * math.sin(math.radians(ang)),
                          rad * (1 - 0.25 * k), v * (0.5 + 0.25 * k), e * (1 - 0.2 * k), ang)
                # the ellipse is drawn with axes (rad, rad*e): elongated along the fibre direction
                continue
            v = val * rng.uniform(0.6, 1.0)
            _blob(ctx, fmap, m, x, y, rad, v, e, rng.uniform(0, 180))
            if irregular and rad > 0.008:  # blot haemorrhages: irregular outline from overlapping lobes
                for _ in range(int(rng.integers(1, 3))):
                    _blob(ctx, fmap, m, x + rng.normal(0, rad * 0.5), y + rng.normal(0, rad * 0.5),
                          rad * rng.uniform(0.4, 0.8), v * rng.uniform(0.7, 1.0), rng.uniform(0.5, 1.0), rng.uniform(0, 180))
        return pts

    def add(name, pts, severity, default_loc=None):
        if not pts:
            return
        x, y = pts[int(rng.integers(len(pts)))]
        loc = default_loc or ctx.location(x, y)
        ctx.add_finding(name, loc, severity)

    # Early DR in real photographs is faint: lesion contrast varies per image, so the model must
    # learn faint dots as well as the obvious ones.
    dr_gain = float(rng.uniform(0.4, 1.0)) if 1 <= g <= 2 else 1.0
    if g >= 1:
        nma = {1: rng.integers(3, 10), 2: rng.integers(8, 20), 3: rng.integers(15, 30), 4: rng.integers(10, 30)}[g]
        add("microaneurysms", scatter("microaneurysms", red, int(nma), 0.006, near_mac=0.6, val=dr_gain),
            "few" if nma < 8 else "several")
    if g >= 2:
        nh = int(rng.integers(3, 10)) if g == 2 else int(rng.integers(8, 14))
        if g >= 3:
            pts = []
            for q in quads:
                pts += scatter("dot_blot_haemorrhages", red, nh, 0.016, quadrant=q, near_mac=0.0, rmax=0.85)
            ctx.add_finding("dot_blot_haemorrhages", "all four quadrants", "extensive")
        else:
            add("dot_blot_haemorrhages", scatter("dot_blot_haemorrhages", red, nh, 0.014, near_mac=0.3, val=dr_gain), "moderate")
        if rng.random() < 0.6:
            add("flame_haemorrhages", scatter("flame_haemorrhages", red, int(rng.integers(2, 6)), 0.03, near_mac=0.0, flame=True, val=dr_gain), "few")
        if rng.random() < 0.6 or lab["is_dme"]:
            add("hard_exudates", scatter("hard_exudates", bright, int(rng.integers(5, 25)), 0.007, near_mac=0.7, val=dr_gain), "scattered")
        if rng.random() < 0.4 or g >= 3:
            add("cotton_wool_spots", scatter("cotton_wool_spots", white, int(rng.integers(1, 5)), 0.03, near_mac=0.0, ecc=0.7), "few")
    if g >= 3:
        sev_kind = rng.random()
        if sev_kind < 0.5:
            m = ctx.mask("venous_beading")
            cnt = 0
            for kind, pts, ws in vessels:
                if kind == "vein" and ws[0] > 0.012 and cnt < 3:
                    cnt += 1
                    for i in range(3, len(pts), 3):
                        x, y = pts[i]
                        if x * x + y * y < 0.8:
                            _blob(ctx, vv, m, x, y, ws[i] * 0.9, 1.0)
                            _blob(ctx, red, None, x, y, ws[i] * 0.9, 0.6)
            ctx.add_finding("venous_beading", "two quadrants", "moderate")
        if sev_kind > 0.35:
            m = ctx.mask("irma")
            for x, y in _quadrant_points(ctx, int(rng.integers(1, 4)), near_macula=0.3):
                p = np.array(ctx.px(x, y))
                seg = [p]
                h = rng.random() * 6.28
                for _ in range(8):
                    h += rng.normal(0, 0.9)
                    p = p + 0.012 * R * np.array([math.cos(h), math.sin(h)])
                    seg.append(p)
                arrp = np.round(np.array(seg) * 16).astype(np.int32)
                cv2.polylines(red, [arrp], False, 0.8, max(1, int(0.004 * R)), cv2.LINE_AA, 4)
                cv2.polylines(m, [arrp], False, 1, max(1, int(0.004 * R)) + 1, cv2.LINE_8, 4)
            ctx.add_finding("irma", ctx.location(x, y), "moderate")
    if g == 4:
        kind4 = rng.random()
        def neo(cx_u, cy_u, name, spread):
            m = ctx.mask(name)
            for _ in range(int(rng.integers(5, 10))):
                p = np.array(ctx.px(cx_u, cy_u)) + rng.normal(0, spread * R * 0.4, 2)
                seg = [p]
                h = rng.random() * 6.28
                for _ in range(10):
                    h += rng.normal(0, 0.6)
                    p = p + spread * 0.25 * R * np.array([math.cos(h), math.sin(h)])
                    seg.append(p)
                arrp = np.round(np.array(seg) * 16).astype(np.int32)
                th = max(1, int(0.003 * R))
                cv2.polylines(red, [arrp], False, 0.9, th, cv2.LINE_AA, 4)
                cv2.polylines(m, [arrp], False, 1, th + 1, cv2.LINE_8, 4)
        if kind4 < 0.45:
            neo(ctx.dx, ctx.dy, "neovascularisation_disc", ctx.dd * 0.5)
            ctx.add_finding("neovascularisation_disc", "optic disc", "moderate")
        elif kind4 < 0.75:
            x, y = _quadrant_points(ctx, 1, rmin=0.35, rmax=0.75)[0]
            neo(x, y, "neovascularisation_elsewhere", ctx.dd * 0.6)
            ctx.add_finding("neovascularisation_elsewhere", ctx.location(x, y), "moderate")
        else:
            x, y = _quadrant_points(ctx, 1, rmin=0.2, rmax=0.6)[0]
            name = "preretinal_haemorrhage" if rng.random() < 0.6 else "vitreous_haemorrhage"
            m = ctx.mask(name)
            big = np.zeros((S, S), np.float32)
            r_ = ctx.dd * rng.uniform(0.8, 1.8) * (1.0 if name == "preretinal_haemorrhage" else 1.6)
            _blob(ctx, big, m, x, y, r_, 1.0, rng.uniform(0.6, 0.9), rng.uniform(0, 180))
            big = _blur(big, max(1.0, r_ * R * (0.1 if name == "preretinal_haemorrhage" else 0.5)))
            red += big * 1.1
            ctx.add_finding(name, ctx.location(x, y), "moderate")
        if rng.random() < 0.35:
            m = ctx.mask("laser_scars")
            for x, y in _quadrant_points(ctx, int(rng.integers(40, 120)), rmin=0.55, rmax=0.95):
                _blob(ctx, dark, m, x, y, 0.012, 0.8)
                _blob(ctx, white, None, x, y, 0.006, 0.5)
            ctx.add_finding("laser_scars", "periphery", "panretinal photocoagulation")
    if lab["is_dme"]:
        m = ctx.mask("macular_oedema")
        r_ = ctx.dd * rng.uniform(0.5, 1.0)
        oed = np.zeros((S, S), np.float32)
        _blob(ctx, oed, m, ctx.fx + rng.normal(0, 0.02), ctx.fy + rng.normal(0, 0.02), r_, 1.0)
        oed = _blur(oed, r_ * R * 0.3)
        white += 0.25 * oed
        # circinate ring of exudates
        m2 = ctx.mask("hard_exudates")
        cxr, cyr = ctx.fx + rng.normal(0, 0.6) * ctx.dd, ctx.fy + rng.normal(0, 0.4) * ctx.dd
        rr_ = ctx.dd * rng.uniform(0.4, 0.8)
        for a in np.linspace(0, 2 * math.pi, int(rng.integers(14, 30)), endpoint=False):
            if rng.random() < 0.75:
                _blob(ctx, bright, m2, cxr + rr_ * math.cos(a) + rng.normal(0, 0.01), cyr + rr_ * math.sin(a) + rng.normal(0, 0.01),
                      0.008 * rng.uniform(0.6, 1.4), 1.0)
        ctx.add_finding("macular_oedema", "macula", "centre-involving" if rng.random() < 0.6 else "non-centre-involving")
        ctx.add_finding("hard_exudates", "macula", "circinate ring")
    if lab["is_amd"]:
        stage = rng.random()
        soft = stage > 0.35
        n = int(rng.integers(8, 40))
        name = "drusen_soft" if soft else "drusen_hard"
        pts = []
        m = ctx.mask(name)
        for _ in range(n):
            a = rng.random() * 6.28
            r_ = abs(rng.normal(0, 0.9 * ctx.dd))
            x, y = ctx.fx + r_ * math.cos(a), ctx.fy + r_ * math.sin(a)
            _blob(ctx, bright, m, x, y, (0.014 if soft else 0.006) * rng.uniform(0.6, 1.4), 0.7 if soft else 0.9)
        ctx.add_finding(name, "macula", "numerous" if n > 25 else "several")
        if stage > 0.5:
            m = ctx.mask("pigment_changes")
            for _ in range(int(rng.integers(3, 10))):
                a = rng.random() * 6.28
                r_ = abs(rng.normal(0, 0.5 * ctx.dd))
                _blob(ctx, dark, m, ctx.fx + r_ * math.cos(a), ctx.fy + r_ * math.sin(a), 0.01 * rng.uniform(0.5, 1.5), 0.8, 0.6, rng.uniform(0, 180))
            ctx.add_finding("pigment_changes", "macula", "mild")
        if stage > 0.75:
            late = "geographic_atrophy" if rng.random() < 0.55 else "cnv_scar"
            m = ctx.mask(late)
            r_ = ctx.dd * rng.uniform(0.4, 0.9)
            tmp = np.zeros((S, S), np.float32)
            _blob(ctx, tmp, m, ctx.fx + rng.normal(0, 0.02), ctx.fy + rng.normal(0, 0.02), r_, 1.0, rng.uniform(0.7, 1.0), rng.uniform(0, 180))
            if late == "geographic_atrophy":
                tmp = cv2.GaussianBlur(tmp, (0, 0), max(0.8, r_ * R * 0.06))
                bright += 0.5 * tmp
                white += 0.25 * tmp
            else:
                tmp = _blur(tmp, max(0.8, r_ * R * 0.15))
                white += 0.6 * tmp
                ring = tmp * (1 - tmp) * 4
                dark += 0.5 * ring
                red += 0.2 * ring
            ctx.add_finding(late, "macula", "advanced")
    if myopia:
        if rng.random() < 0.5:
            m = ctx.mask("lacquer_cracks")
            for _ in range(int(rng.integers(1, 4))):
                p = np.array(ctx.px(ctx.fx + rng.normal(0, 0.6 * ctx.dd), ctx.fy + rng.normal(0, 0.6 * ctx.dd)))
                h = rng.random() * 6.28
                seg = [p]
                for _ in range(6):
                    h += rng.normal(0, 0.35)
                    p = p + 0.025 * R * np.array([math.cos(h), math.sin(h)])
                    seg.append(p)
                arrp = np.round(np.array(seg) * 16).astype(np.int32)
                th = max(1, int(0.004 * R))
                cv2.polylines(bright, [arrp], False, 0.7, th, cv2.LINE_AA, 4)
                cv2.polylines(m, [arrp], False, 1, th + 1, cv2.LINE_8, 4)
            ctx.add_finding("lacquer_cracks", "macula", "mild")
        if rng.random() < 0.4:
            m = ctx.mask("chorioretinal_atrophy")
            tmp = np.zeros((S, S), np.float32)
            for _ in range(int(rng.integers(1, 4))):
                _blob(ctx, tmp, None, ctx.fx + rng.normal(0, 0.8 * ctx.dd), ctx.fy + rng.normal(0, 0.6 * ctx.dd),
                      ctx.dd * rng.uniform(0.2, 0.5), 1.0, rng.uniform(0.6, 1), rng.uniform(0, 180))
            # irregular border: blur, perturb with noise, re-threshold
            tmp = _blur(tmp, max(1.0, 0.03 * R)) + _smooth_noise(rng, (S, S), 30, 0.12)
            patch = (tmp > 0.5).astype(np.float32)
            m[(patch > 0) & (m == 0)] = 1
            edge_p = cv2.GaussianBlur(patch, (0, 0), max(0.8, 0.004 * R))
            ring = np.clip(edge_p * (1 - edge_p) * 4, 0, 1)
            white += 0.45 * edge_p
            bright += 0.35 * edge_p
            dark += 0.5 * ring * (_smooth_noise(rng, (S, S), 40, 1.0) > 0.3)
            ctx.add_finding("chorioretinal_atrophy", "macula", "patchy")
    if htn:
        if rng.random() < 0.5:
            add("flame_haemorrhages", scatter("flame_haemorrhages", red, int(rng.integers(2, 7)), 0.03, near_mac=0.0, flame=True), "few")
        if rng.random() < 0.45:
            add("cotton_wool_spots", scatter("cotton_wool_spots", white, int(rng.integers(1, 4)), 0.03, near_mac=0.0, ecc=0.7), "few")
    if rvo:
        if crvo:
            pts = []
            for q in quads:
                pts += scatter("flame_haemorrhages", red, int(rng.integers(10, 20)), 0.035, quadrant=q, near_mac=0.0, flame=True, rmax=0.9)
                scatter("dot_blot_haemorrhages", red, int(rng.integers(5, 12)), 0.016, quadrant=q, near_mac=0.0, rmax=0.9)
            ctx.add_finding("flame_haemorrhages", "all four quadrants", "extensive")
            ctx.add_finding("dot_blot_haemorrhages", "all four quadrants", "extensive")
        else:
            q = rvo_quadrant
            scatter("flame_haemorrhages", red, int(rng.integers(12, 30)), 0.035, quadrant=q, near_mac=0.0, flame=True, rmax=0.9)
            scatter("dot_blot_haemorrhages", red, int(rng.integers(4, 12)), 0.016, quadrant=q, near_mac=0.0, rmax=0.9)
            ctx.add_finding("flame_haemorrhages", qname[q], "extensive")
            ctx.add_finding("dot_blot_haemorrhages", qname[q], "moderate")
        if rng.random() < 0.5:
            add("cotton_wool_spots", scatter("cotton_wool_spots", white, int(rng.integers(1, 5)), 0.03,
                                             quadrant=rvo_quadrant, near_mac=0.0, ecc=0.7), "few")
    if lab["is_erm"]:
        m = ctx.mask("epiretinal_membrane")
        r_ = ctx.dd * rng.uniform(0.8, 1.5)
        tmp = np.zeros((S, S), np.float32)
        _blob(ctx, tmp, m, ctx.fx + rng.normal(0, 0.03), ctx.fy + rng.normal(0, 0.03), r_, 1.0, rng.uniform(0.6, 1.0), rng.uniform(0, 180))
        # cellophane sheen with fine radiating wrinkle striae
        st = np.abs(_smooth_noise(rng, (S, S), 60, 1.0))
        striae = np.exp(-st * 6.0)
        sheenm = _blur(tmp, r_ * R * 0.25) * (0.45 + 0.55 * striae)
        img += (sheenm * rng.uniform(0.14, 0.26))[..., None] * np.array([0.85, 0.9, 0.9], np.float32)
        ctx.add_finding("epiretinal_membrane", "macula", "moderate" if rng.random() < 0.5 else "mild")

    # composite lesions
    if red.any():
        np.clip(red, 0, 1.2, out=red)
        red_b = cv2.GaussianBlur(red, (3, 3), 0) if S >= 256 else red
        hab = np.array([[0.3], [0.74], [0.68]], np.float32)
        absorb = cv2.transform(red_b[..., None], hab)
        np.subtract(1.0, absorb, out=absorb)
        img *= absorb
    if bright.any():
        b = np.clip(cv2.GaussianBlur(bright, (3, 3), 0), 0, 1)[..., None]
        ycol = np.array([1.0, 0.9, 0.45], np.float32) * rng.uniform(0.9, 1.05)
        img[:] = img * (1 - b * 0.85) + ycol * b * 0.85
    if white.any():
        wmap = np.clip(cv2.GaussianBlur(white, (0, 0), max(0.7, 0.006 * R)), 0, 1)[..., None]
        wcol = np.array([1.0, 0.93, 0.85], np.float32)
        img[:] = img * (1 - wmap * 0.8) + wcol * wmap * 0.8
    if dark.any():
        dmap = np.clip(cv2.GaussianBlur(dark, (3, 3), 0), 0, 1)[..., None]
        img *= 1 - dmap * np.array([0.75, 0.78, 0.8], np.float32)

    # ---------------- camera / optics ----------------
    q = lab["quality_grade"]
    vig = rng.uniform(0.25, 0.55)
    illum = 1.0 - vig * np.clip(rl, 0, 1.2) ** rng.uniform(2.5, 4.5)
    # uneven illumination
    une = {"good": 0.08, "usable": 0.25, "reject": 0.5}[q] * rng.random()
    ga = rng.random() * 6.28
    illum = illum * (1 + une * (uxl * math.cos(ga) + uyl * math.sin(ga)))
    expo = rng.lognormal(-0.05, 0.22)
    if q != "good" and rng.random() < 0.4:
        expo *= rng.choice([rng.uniform(0.35, 0.65), rng.uniform(1.25, 1.55)]) if q == "reject" else rng.uniform(0.6, 0.85)
    illum = illum * expo
    # small pupil shadow / dark crescent
    if q != "good" and rng.random() < 0.4:
        a = rng.random() * 6.28
        d = uxl * math.cos(a) + uyl * math.sin(a)
        illum = illum * np.clip(1 - np.clip((d - rng.uniform(0.1, 0.5)) * 2.5, 0, 1) * rng.uniform(0.5, 0.9), 0, 1)
    wb = np.exp(np.clip(rng.normal(0, [0.1, 0.1, 0.18]), -0.25, 0.35)).astype(np.float32)
    if rng.random() < 0.12:  # cooler cameras
        wb *= np.array([0.85, 1.0, 1.15], np.float32)
    img *= up(illum.astype(np.float32)[..., None] * wb)
    # flare / haze crescent at the rim
    if rng.random() < (0.15 if q == "good" else 0.4):
        a = rng.random() * 6.28
        d = uxl * math.cos(a) + uyl * math.sin(a)
        fl = (np.clip((rl - 0.75) * 4, 0, 1) * np.clip(d, 0, 1) ** 2 * rng.uniform(0.3, 0.9)).astype(np.float32)
        img += up(fl)[..., None] * np.array([0.6, 0.85, 0.95], np.float32)
    # cataract: veil + blur + contrast loss
    if lab["is_cataract"]:
        # the whole range from early lens haze (vessels still visible) to a dense opacity: real
        # cataract photographs are mostly mild to moderate
        dens = rng.uniform(0.15, 1.0)
        sig = S * (0.004 + 0.022 * dens)
        img = _blur(img, sig)
        veil = np.array([0.95, 0.85, 0.7], np.float32) * rng.uniform(0.6, 1.0)
        va_ = 0.12 + 0.63 * dens
        veil_map = (va_ * (0.8 + 0.3 * _smooth_noise(rng, (S, S), 3, 1.0)))[..., None]
        veil_map = np.clip(veil_map, 0, 0.95)
        lumi = img.mean(axis=2, keepdims=True)
        img = img * (1 - veil_map) + (veil * 0.8 + lumi * 0.4) * veil_map
        ctx.mask("media_opacity")[fov] = 1
        ctx.add_finding("media_opacity", "diffuse", "dense" if dens > 0.75 else ("moderate" if dens > 0.4 else "mild"))
        if dens > 0.85:
            lab["quality_grade"] = "reject"
    # defocus
    blur = {"good": rng.uniform(0.6, 2.0), "usable": rng.uniform(1.5, 3.0), "reject": rng.uniform(3.5, 7)}[q] * S / 512
    if blur > 0.3:
        img = _blur(img, blur)
    # eyelash shadow: soft dark smudge entering from the top or bottom rim
    if q != "good" and rng.random() < 0.35:
        lash = np.zeros((S, S), np.float32)
        top = rng.random() < 0.7
        y0 = (ctx.cy - R * rng.uniform(0.75, 1.0)) if top else (ctx.cy + R * rng.uniform(0.75, 1.0))
        cv2.ellipse(lash, (int(ctx.cx + rng.normal(0, 0.3) * R), int(y0)), (int(R * rng.uniform(0.4, 0.9)), int(R * rng.uniform(0.1, 0.3))),
                    rng.uniform(-15, 15), 0, 360, 1.0, -1)
        lash = _blur(lash, R * 0.08)
        img *= (1 - rng.uniform(0.4, 0.85) * lash)[..., None]
    if rng.random() < 0.3:
        dust = np.zeros((S, S), np.float32)
        for _ in range(int(rng.integers(1, 6))):
            cv2.circle(dust, (int(rng.uniform(0.15, 0.85) * S), int(rng.uniform(0.15, 0.85) * S)), max(1, int(S * rng.uniform(0.004, 0.012))), 1.0, -1)
        dust = cv2.GaussianBlur(dust, (0, 0), max(0.8, S / 300))
        img *= (1 - 0.3 * dust)[..., None]
    # colour balance / gamma
    np.clip(img, 0, 1, out=img)
    gamma = rng.uniform(0.8, 1.25)
    img = cv2.pow(img, gamma)
    # sensor noise
    nsig = {"good": 0.003, "usable": 0.008, "reject": 0.02}[q] * rng.uniform(0.5, 1.2)
    # cheap noise: half-resolution gaussian upsampled + fine
    nz = rng.standard_normal((S // 2, S // 2)).astype(np.float32)
    nz = cv2.resize(nz, (S, S), interpolation=cv2.INTER_LINEAR)
    img += (nz * nsig)[..., None]
    # soft FOV edge, black surround
    edge = np.clip((1.0 - np.sqrt(rr2)) * (R / 1.5), 0, 1)
    if crop:
        edge = edge * fov
    img *= edge[..., None]
    out = cv2.convertScaleAbs(img, alpha=255.0)
    # JPEG compression
    if rng.random() < 0.5:
        qual = int(rng.integers(50, 95)) if q != "reject" else int(rng.integers(25, 60))
        ok, buf = cv2.imencode(".jpg", out[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, qual])
        out = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
    out = np.ascontiguousarray(out)
    out[~fov] = 0

    # readability
    if lab["quality_grade"] == "reject":
        lab["is_retina_readable"] = 0
        if rng.random() < 0.6 or lab["is_cataract"]:
            lab["is_optic_disc_readable"] = 0
    if not fov[int(np.clip(dyp, 0, S - 1)), int(np.clip(dxp, 0, S - 1))]:
        lab["is_optic_disc_readable"] = 0

    masks = {}
    for name, m in ctx.masks.items():
        mb = (m > 0) & fov
        if mb.any():
            masks[name] = mb
    findings = [f for f in ctx.findings if f["name"] in masks]
    return SyntheticFundus(image=out, masks=masks, labels=lab, findings=findings)
