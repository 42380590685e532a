"""Image-quality screen for fundus photographs: a "this looks ungradable" warning, not a diagnosis.

``assess_quality(image)`` computes four simple, documented statistics on a 512 px (longest side)
grey-level copy of the image and compares each with a fixed threshold:

* ``fov_fraction``  - fraction of pixels inside the fundus field of view, the mask the model's
  preprocessing uses (``engine.preprocess.fundus_mask``: brighter than the photograph's own dark surround,
  so an under-exposed photograph keeps its whole field of view and is reported as under-exposed, not as
  badly framed). A well-framed fundus photo fills roughly 50-80 % of the frame;
  below ``MIN_FOV`` the image is probably not a fundus photograph or is badly framed.
* ``mean_brightness`` - mean grey level (0-1) inside the field of view. Below ``MIN_BRIGHTNESS`` is
  under-exposed; above ``MAX_BRIGHTNESS`` is over-exposed / washed out.
* ``clipped_fraction`` - fraction of field-of-view pixels at or above 250 (saturated highlights).
* ``sharpness`` - variance of the 4-neighbour Laplacian of the grey image inside the field of view
  (eroded so the rim is excluded), on the 0-255 scale. Low values mean blur (defocus, motion, media
  opacity). Threshold ``MIN_SHARPNESS``.
* ``contrast`` - standard deviation of the grey level (0-1) inside the field of view (RMS contrast).
  Threshold ``MIN_CONTRAST``.

The thresholds are deliberately lenient (only clearly bad images are flagged) and were set on the engine's
synthetic fundus images and simple degradations of them (blur, darkening, flat fields): about 1 in 70
good/usable renders is flagged, and a Gaussian blur of sigma >= 4 px (at 512 px) is caught. Media-opacity
(cataract) images are soft by nature and may be flagged as blurred. They are heuristics, not a grader.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from .preprocess import fundus_mask

WORK_SIDE = 512
MIN_FOV = 0.25
MIN_BRIGHTNESS = 0.08
MAX_BRIGHTNESS = 0.85
MAX_CLIPPED = 0.25
MIN_SHARPNESS = 0.8
MIN_CONTRAST = 0.03

def _erode(mask: np.ndarray, r: int) -> np.ndarray:
    out = mask.copy()
    for _ in range(r):
        m = out.copy()
        m[1:, :] &= out[:-1, :]
        m[:-1, :] &= out[1:, :]
        m[:, 1:] &= out[:, :-1]
        m[:, :-1] &= out[:, 1:]
        out = m
    return out


def assess_quality(image: Image.Image) -> dict:
    """Return ``{"gradable": bool, "reasons": [str, ...], "scores": {name: float}}``.

    ``reasons`` are short human-readable sentences (empty when gradable).
    """
    im = image.convert("RGB")
    if max(im.size) > WORK_SIDE:
        im = im.copy()
        im.thumbnail((WORK_SIDE, WORK_SIDE), Image.BILINEAR)
    rgb = np.asarray(im, dtype=np.float32)
    grey = rgb.mean(axis=2)
    fov = fundus_mask(rgb)
    fov_fraction = float(fov.mean())

    reasons: list[str] = []
    scores = {"fov_fraction": round(fov_fraction, 4)}
    if fov.sum() < 64:
        scores.update(mean_brightness=0.0, clipped_fraction=0.0, sharpness=0.0, contrast=0.0)
        return {"gradable": False, "reasons": ["Image is almost entirely dark: no fundus field of view found."],
                "scores": scores}

    inside = grey[fov]
    mean_b = float(inside.mean() / 255.0)
    clipped = float((inside >= 250).mean())
    contrast = float(inside.std() / 255.0)
    lap = np.zeros_like(grey)
    lap[1:-1, 1:-1] = (grey[:-2, 1:-1] + grey[2:, 1:-1] + grey[1:-1, :-2] + grey[1:-1, 2:]
                       - 4.0 * grey[1:-1, 1:-1])
    core = _erode(fov, 3)
    core[[0, -1], :] = False
    core[:, [0, -1]] = False
    sharp = float(lap[core].var()) if core.sum() > 16 else 0.0
    scores.update(mean_brightness=round(mean_b, 4), clipped_fraction=round(clipped, 4),
                  sharpness=round(sharp, 3), contrast=round(contrast, 4))

    if fov_fraction < MIN_FOV:
        reasons.append(f"Small field of view ({fov_fraction:.0%} of the frame): badly framed or not a fundus photo.")
    if mean_b < MIN_BRIGHTNESS:
        reasons.append(f"Under-exposed (mean brightness {mean_b:.2f}).")
    elif mean_b > MAX_BRIGHTNESS:
        reasons.append(f"Over-exposed (mean brightness {mean_b:.2f}).")
    if clipped > MAX_CLIPPED:
        reasons.append(f"Saturated highlights ({clipped:.0%} of the field of view).")
    if sharp < MIN_SHARPNESS:
        reasons.append(f"Blurred (Laplacian variance {sharp:.1f}).")
    if contrast < MIN_CONTRAST:
        reasons.append(f"Very low contrast ({contrast:.3f}).")
    return {"gradable": not reasons, "reasons": reasons, "scores": scores}
