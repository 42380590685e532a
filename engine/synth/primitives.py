"""Drawing primitives shared by the layers: blur, noise, ellipses, polylines (all float32, OpenCV)."""
from __future__ import annotations

import math

import cv2
import numpy as np


SHIFT = 4  # sub-pixel bits for cv2 drawing calls
_MUL = float(1 << SHIFT)
_GRIDS: dict = {}


def grid(n):
    """Cached read-only (yy, xx) float32 index grids of an n x n image."""
    g = _GRIDS.get(n)
    if g is None:
        yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
        yy.setflags(write=False)
        xx.setflags(write=False)
        g = _GRIDS[n] = (yy, xx)
        if len(_GRIDS) > 16:
            _GRIDS.pop(next(iter(_GRIDS)))
    return g


def blur(img, sigma):
    """Gaussian blur; large sigmas are done at reduced resolution (same look, a fraction of the cost)."""
    if sigma < 1.6:
        return cv2.GaussianBlur(img, (0, 0), max(0.3, sigma))
    h, w = img.shape[:2]
    f = 2 if sigma < 4 else (4 if sigma < 10 else 8)
    small = cv2.resize(img, (max(8, w // f), max(8, h // f)), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), max(0.5, (sigma * sigma - (f / 2) ** 2) ** 0.5 / f))
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def rgb(x):
    """An H x W map repeated into 3 channels (dtype kept): element-wise arithmetic with the image then
    gives the values broadcasting ``x[..., None]`` gives, ~5x faster (numpy broadcasts a last axis of 1
    pixel by pixel)."""
    return cv2.merge([x, x, x])


def tint(x, colour):
    """``x[..., None] * colour`` (an H x W map times an RGB colour, both float32), channel by channel."""
    return cv2.merge([x * colour[0], x * colour[1], x * colour[2]])


def channel_max(img):
    """img.max(axis=2), the same values: numpy reduces a 3-long last axis pixel by pixel, ~20x slower
    than two element-wise maxima."""
    return np.maximum(np.maximum(img[..., 0], img[..., 1]), img[..., 2])


def channel_mean(img):
    """img.mean(axis=2), bit for bit (sum in channel order, then numpy's divide by the count as an
    integer scalar), without the slow reduction over a 3-long last axis."""
    s = img[..., 0] + img[..., 1]
    s += img[..., 2]
    np.true_divide(s, np.intp(3), out=s, casting="unsafe")
    return s


def smooth_noise(rng, shape, cells, amp=1.0):
    """Smooth value noise: a small random grid up-sampled with bicubic interpolation."""
    h, w = shape
    g = rng.standard_normal((cells, cells)).astype(np.float32)
    return cv2.resize(g, (w, h), interpolation=cv2.INTER_CUBIC) * amp


def polar_noise(rng, S, cx, cy, unit, nth, rows, radial_scale, interp):
    """Noise sampled in polar coordinates around (cx, cy) px on a half-resolution grid: fine across
    angles (``nth`` cells round the circle), coarse along the radius, i.e. radial stripes.
    Returns (noise, radius in ``unit`` px, angle in radians) as (T, T) float32 arrays, T = max(64, S // 2)."""
    g = rng.standard_normal((rows, nth + 3)).astype(np.float32)
    g[:, -3:] = g[:, :3]  # wrap round the circle
    T = max(64, S // 2)
    yt, xt = grid(T)
    tsc = S / T
    ux = (xt * tsc - cx) / unit
    uy = (yt * tsc - cy) / unit
    ang = cv2.phase(ux, uy)
    mr = cv2.magnitude(ux, uy)
    noise = cv2.remap(g, (ang * (nth / (2 * np.pi))).astype(np.float32), (mr * radial_scale).astype(np.float32),
                      interp, borderMode=cv2.BORDER_REFLECT)
    return noise, mr, ang


def ellipse(fmap, mask, cx_px, cy_px, rad_px, val=1.0, ecc=1.0, ang=0.0):
    """Filled anti-aliased ellipse into a float map (semi-axes rad, rad*ecc px) and, if given, a hard mask."""
    r = max(0.6, rad_px)
    axes = (max(1, int(round(r * _MUL))), max(1, int(round(r * ecc * _MUL))))
    c = (int(round(cx_px * _MUL)), int(round(cy_px * _MUL)))
    if fmap is not None:
        cv2.ellipse(fmap, c, axes, ang, 0, 360, float(val), -1, cv2.LINE_AA, SHIFT)
    if mask is not None:
        cv2.ellipse(mask, c, axes, ang, 0, 360, 1, -1, cv2.LINE_8, SHIFT)


def polyline(fmap, mask, pts_px, val, thickness):
    """Anti-aliased open polyline (points in px) into a float map and a hard mask (1 px wider)."""
    arr = np.round(np.asarray(pts_px, np.float64) * _MUL).astype(np.int32)
    th = max(1, int(thickness))
    if fmap is not None:
        cv2.polylines(fmap, [arr], False, float(val), th, cv2.LINE_AA, SHIFT)
    if mask is not None:
        cv2.polylines(mask, [arr], False, 1, th + 1, cv2.LINE_8, SHIFT)


def random_walk(rng, start_px, steps, step_px, turn_sd):
    """Points of a random walk with correlated heading (for IRMA, new vessels, lacquer cracks)."""
    p = np.asarray(start_px, np.float64)
    h = rng.random() * 2 * math.pi
    seg = [p]
    for _ in range(steps):
        h += rng.normal(0, turn_sd)
        p = p + step_px * np.array([math.cos(h), math.sin(h)])
        seg.append(p)
    return seg


def box(cx, cy, half, S):
    """Slices of a square region of interest of half-width ``half`` px around (cx, cy), clipped to the image."""
    x0, x1 = max(0, int(cx - half)), min(S, int(cx + half) + 1)
    y0, y1 = max(0, int(cy - half)), min(S, int(cy + half) + 1)
    return slice(y0, max(y0, y1)), slice(x0, max(x0, x1))


def layer_rng(seed: int, cond_key: int, name: str) -> np.random.Generator:
    """Independent random stream for one layer: seeded by [seed, conditions, layer name]."""
    import zlib
    return np.random.default_rng(np.random.SeedSequence(
        [int(seed) & 0xFFFFFFFF, (int(seed) >> 32) & 0xFFFFFFFF, cond_key, zlib.crc32(name.encode())]))
