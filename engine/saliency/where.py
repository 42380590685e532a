"""Where a saliency map points, in a clinician's words: "macula, temporal to the fovea", "optic disc,
inferior rim", "superotemporal arcade", "periphery, nasal".

The words come from the optic disc and the fovea found on the photograph (``find_landmarks``: the
disc by :func:`engine.preprocess.disc_centre`, the fovea as the darkest spot about 2.5 disc diameters
temporal to it) and the eye's side. Nasal and temporal swap between a right and a left eye; when the
side is not known it is inferred from which side of the fovea the disc lies, and the line says so.
The distances follow the renderer's own location words (engine.synth.eye.Eye.location), so a map
drawn on a rendered finding reads as the finding's location.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..errors import VisionCLIPError

# in disc diameters (DD), as in engine.synth.eye.Eye.location
DISC_RADIUS_DD, CUP_RADIUS_DD = 0.5, 0.22
FOVEA_DD, MACULA_DD, PERIPAPILLARY_DD = 0.35, 1.4, 0.9
PERIPHERY = 0.78  # of the field-of-view radius from its centre
DISC_TO_FOVEA_DD = 2.5  # typical disc-fovea distance in disc diameters
TYPICAL_DD = 0.33  # typical disc diameter, of the field-of-view radius (45-degree photographs)
_SIDES = {"r": "right", "right": "right", "od": "right", "l": "left", "left": "left", "os": "left"}


@dataclass(frozen=True)
class Landmarks:
    """Positions on one photograph, in pixels (y, x)."""

    disc: tuple[float, float]
    fovea: tuple[float, float]
    disc_diameter: float
    centre: tuple[float, float]  # of the field of view
    radius: float  # of the field of view


@dataclass(frozen=True)
class MapLocation:
    region: str  # e.g. "macula, temporal to the fovea"
    share: float  # share of the map's energy in the hot spot that was named
    point: tuple[int, int]  # (y, x): the hot spot's energy-weighted centre
    eye_side: str | None  # "right" / "left"; None when neither given nor inferable
    eye_side_given: bool

    @property
    def text(self) -> str:
        side = "" if self.eye_side_given else (
            f" (eye side not given; taken as the {self.eye_side} eye from the disc position)" if self.eye_side
            else " (eye side unknown: nasal/temporal not told apart)")
        return f"Map points at: {self.region}{side}."

    @property
    def short(self) -> str:
        return f"Map points at: {self.region}."


LANDMARK_SIDE = 384  # px: landmarks are located on a copy this size at most


def fovea_centre(rgb: np.ndarray, disc: tuple[int, int], fov: np.ndarray) -> tuple[int, int]:
    """(y, x) of the darkest blurred spot 1.7-3.3 typical disc diameters from the disc, towards the
    field's centre and about level with the disc: the fovea."""
    import cv2

    h, w = rgb.shape[:2]
    ys, xs = np.nonzero(fov)
    if not ys.size:
        return h // 2, w // 2
    cx = (xs.min() + xs.max()) / 2.0
    dd = TYPICAL_DD * max(ys.max() - ys.min(), xs.max() - xs.min()) / 2.0
    grey = rgb.astype(np.float32).mean(axis=2) * fov
    field = fov.astype(np.float32)
    weight = np.maximum(_blur(field, dd), 1e-3)
    # darker than its surroundings, not merely dark: vignetting darkens the whole rim of the field
    small = max(2.0, dd / 4)
    near = _blur(grey, small) / np.maximum(_blur(field, small), 1e-3)
    lum = near - _blur(grey, dd) / weight
    dy, dx = disc
    towards_centre = 1.0 if cx >= dx else -1.0
    yy, xx = np.mgrid[0:h, 0:w]
    along = (xx - dx) * towards_centre
    ok = fov & (along > 1.7 * dd) & (along < 3.3 * dd) & (np.abs(yy - dy) < 0.8 * dd)
    if not ok.any():
        return int(dy), int(np.clip(dx + towards_centre * DISC_TO_FOVEA_DD * dd, 0, w - 1))
    y, x = np.unravel_index(int(np.where(ok, lum, np.inf).argmin()), lum.shape)
    return int(y), int(x)


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """``cv2.GaussianBlur`` of a float32 map, on a copy ``sigma // 8`` times smaller when that is 2 or more:
    a kernel of sigma 60 px is wider than the whole 384-px copy (most of the landmarks' time), and what
    so wide a blur leaves is smooth enough to resample."""
    import cv2

    k = int(sigma // 8)
    if k < 2:
        return cv2.GaussianBlur(x, (0, 0), sigma)
    h, w = x.shape[:2]
    small = cv2.resize(x, (max(1, round(w / k)), max(1, round(h / k))), interpolation=cv2.INTER_AREA)
    return cv2.resize(cv2.GaussianBlur(small, (0, 0), sigma / k), (w, h), interpolation=cv2.INTER_LINEAR)


def refine_disc(rgb: np.ndarray, peak: tuple[int, int], dd: float) -> tuple[int, int]:
    """The centre of the bright disc round its brightest spot (the cup, often off-centre, is brightest):
    the centroid of the pixels within one disc diameter brighter than halfway from their mean to the peak."""
    import cv2

    h, w = rgb.shape[:2]
    grey = cv2.GaussianBlur(rgb.astype(np.float32).mean(axis=2), (0, 0), max(1.0, dd / 10))
    y0, x0 = peak
    r = int(max(2, dd))
    top, left = max(0, y0 - r), max(0, x0 - r)
    win = grey[top:min(h, y0 + r + 1), left:min(w, x0 + r + 1)]
    yy, xx = np.mgrid[top:top + win.shape[0], left:left + win.shape[1]]
    near = np.hypot(yy - y0, xx - x0) <= r
    level = 0.5 * (win[near].mean() + win[near].max())
    bright = near & (win >= level)
    labels, _ = ndimage.label(bright)
    blob = labels == labels[y0 - top, x0 - left] if labels[y0 - top, x0 - left] else bright
    return int(round(yy[blob].mean())), int(round(xx[blob].mean()))


def find_landmarks(rgb: np.ndarray, fov: np.ndarray | None = None) -> Landmarks:
    """Disc, fovea, disc diameter and field of view of a photograph (H, W, 3), in its own pixels. Located
    on a copy of at most LANDMARK_SIDE pixels: the blurs scale with the disc, and at 1024 px they took
    seconds."""
    import cv2

    from ..preprocess import fundus_mask

    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise VisionCLIPError(f"landmarks need an RGB photograph (H, W, 3), not shape {rgb.shape}")
    fov = fundus_mask(rgb) if fov is None else np.asarray(fov, dtype=bool)
    scale = max(rgb.shape[:2]) / LANDMARK_SIDE
    if scale <= 1:
        return _landmarks(rgb, fov)
    size = (max(1, round(rgb.shape[1] / scale)), max(1, round(rgb.shape[0] / scale)))
    small = _landmarks(cv2.resize(rgb, size, interpolation=cv2.INTER_AREA),
                       cv2.resize(fov.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool))
    sy, sx = rgb.shape[0] / size[1], rgb.shape[1] / size[0]
    return Landmarks((small.disc[0] * sy, small.disc[1] * sx), (small.fovea[0] * sy, small.fovea[1] * sx),
                     small.disc_diameter * scale, (small.centre[0] * sy, small.centre[1] * sx), small.radius * scale)


def _landmarks(rgb: np.ndarray, fov: np.ndarray) -> Landmarks:
    from ..preprocess import disc_centre

    ys, xs = np.nonzero(fov) if fov.any() else np.mgrid[0:rgb.shape[0], 0:rgb.shape[1]].reshape(2, -1)
    centre = ((ys.min() + ys.max()) / 2.0, (xs.min() + xs.max()) / 2.0)
    radius = max(ys.max() - ys.min(), xs.max() - xs.min()) / 2.0
    disc = refine_disc(rgb, disc_centre(rgb), TYPICAL_DD * radius)
    fovea = fovea_centre(rgb, disc, fov)
    # disc and fovea are about 2.5 DD apart; a distance far from the typical one says a locator missed
    typical = TYPICAL_DD * radius
    measured = math.dist(disc, fovea) / DISC_TO_FOVEA_DD
    dd = measured if 0.75 * typical < measured < 1.3 * typical else typical
    return Landmarks(tuple(map(float, disc)), tuple(map(float, fovea)), dd, centre, float(radius))


def _eye_side(eye_side: str | None, marks: Landmarks) -> tuple[str | None, bool]:
    key = str(eye_side).strip().lower() if eye_side else ""
    if key in _SIDES:
        return _SIDES[key], True
    dx = marks.fovea[1] - marks.disc[1]
    if abs(dx) < 0.5 * marks.disc_diameter:
        return None, False
    return ("right" if dx < 0 else "left"), False  # a right eye's fovea lies left of its disc in the photograph


def _direction(dy: float, dx: float, temporal_x: int) -> str:
    """superior / inferior / nasal / temporal: the dominant axis of an offset (image y grows downwards)."""
    if abs(dy) >= abs(dx) or temporal_x == 0:
        return "superior" if dy < 0 else "inferior"
    return "temporal" if dx * temporal_x > 0 else "nasal"


def name_point(y: float, x: float, marks: Landmarks, temporal_x: int) -> str:
    """The anatomical region of one point; ``temporal_x`` is +1 / -1 for temporal towards +x / -x, 0 unknown."""
    dd = marks.disc_diameter
    to_disc = (y - marks.disc[0], x - marks.disc[1])
    to_fovea = (y - marks.fovea[0], x - marks.fovea[1])
    d_disc, d_fovea = math.hypot(*to_disc) / dd, math.hypot(*to_fovea) / dd
    if d_disc < DISC_RADIUS_DD:
        if d_disc < CUP_RADIUS_DD:
            return "optic disc, cup"
        return f"optic disc, {_direction(*to_disc, temporal_x)} rim"
    if d_fovea < FOVEA_DD:
        return "fovea"
    if d_fovea < MACULA_DD:
        return f"macula, {_direction(*to_fovea, temporal_x)} to the fovea"
    if d_disc < PERIPAPILLARY_DD:
        return f"peripapillary, {_direction(*to_disc, temporal_x)}"
    from_centre = (y - marks.centre[0], x - marks.centre[1])
    if math.hypot(*from_centre) > PERIPHERY * marks.radius:
        return f"periphery, {_direction(*from_centre, temporal_x)}"
    vertical = "supero" if y < marks.fovea[0] else "infero"
    if temporal_x == 0:
        return f"{'superior' if vertical == 'supero' else 'inferior'} mid-periphery"
    if (x - (marks.disc[1] + marks.fovea[1]) / 2) * temporal_x > 0:
        return f"{vertical}temporal arcade"
    return f"{vertical}nasal quadrant"


def hot_spot(saliency: np.ndarray, level: float = 0.5) -> tuple[tuple[int, int], float]:
    """((y, x), share): the energy-weighted centre of the connected part of the map above ``level`` x its
    maximum that holds the most energy, and that part's share of the map's total energy."""
    s = np.clip(np.nan_to_num(np.asarray(saliency, dtype=np.float64)), 0, None)
    total = float(s.sum())
    if s.ndim != 2 or total <= 0:
        raise VisionCLIPError("the map is empty: there is nowhere to point at")
    labels, n = ndimage.label(s >= level * s.max())
    energy = ndimage.sum(s, labels, index=np.arange(1, n + 1))
    best = int(np.argmax(energy)) + 1
    cy, cx = ndimage.center_of_mass(s * (labels == best))
    return (int(round(cy)), int(round(cx))), float(energy[best - 1] / total)


def describe_location(saliency: np.ndarray, marks: Landmarks, eye_side: str | None = None) -> MapLocation:
    """Where the map's main hot spot lies, for a map on the photograph that ``marks`` were found on."""
    (y, x), share = hot_spot(saliency)
    side, given = _eye_side(eye_side, marks)
    # the right eye's temporal side is the photograph's left (-x): the fovea lies temporal to the disc
    temporal_x = {"right": -1, "left": 1}.get(side, 0)
    return MapLocation(name_point(y, x, marks, temporal_x), share, (y, x), side, given)


def describe_map(saliency: np.ndarray, rgb, eye_side: str | None = None) -> MapLocation:
    """:func:`describe_location` with the landmarks found on ``rgb``, the photograph the map is drawn on."""
    rgb = np.asarray(rgb)
    if np.shape(saliency) != rgb.shape[:2]:
        raise VisionCLIPError(f"the map {np.shape(saliency)} and the photograph {rgb.shape[:2]} differ in size")
    return describe_location(saliency, find_landmarks(rgb), eye_side)
