"""Shared lesion drawing: scattered blobs (dots, blots, flames, exudates, spots) into a lesion map."""
from __future__ import annotations

import math

from engine.synth.primitives import ellipse


def blob(eye, fmap, mask, x, y, rad_u, val=1.0, ecc=1.0, ang=0.0):
    """Filled ellipse at unit coords (x, y), radius in unit coords."""
    px, py = eye.px(x, y)
    ellipse(fmap, mask, px, py, rad_u * eye.R, val, ecc, ang)


def scatter(eye, canvas, rng, name, fmap, n, radius, quadrant=None, near_mac=0.5, ecc=1.0, flame=False,
            val=1.0, rmax=0.82, irregular=None, contrast=(0.6, 1.0)):
    """Draw n lesions of finding ``name`` into ``fmap`` (and its mask); returns their unit positions."""
    if irregular is None:
        irregular = "haemorrhage" in name
    pts = eye.points(rng, n, quadrant, near_macula=near_mac, rmax=rmax)
    m = canvas.mask(name)
    for x, y in pts:
        rad = radius * rng.uniform(0.6, 1.4)
        v = val * rng.uniform(*contrast)
        if flame:  # feathered streak tapering along the nerve-fibre direction (radial from the disc)
            ang = math.atan2(y - eye.dy, x - eye.dx)
            e = rng.uniform(0.25, 0.45)
            for k in range(3):
                off = rad * 0.25 * k
                blob(eye, fmap, m if k == 0 else None, x - off * math.cos(ang), y - off * math.sin(ang),
                     rad * (1 - 0.25 * k), v * (0.5 + 0.25 * k), e * (1 - 0.2 * k), math.degrees(ang))
            continue
        blob(eye, fmap, m, x, y, rad, v, ecc, rng.uniform(0, 180))
        if irregular and rad > 0.008:  # blot haemorrhages: irregular outline from overlapping lobes
            for _ in range(int(rng.integers(1, 3))):
                blob(eye, fmap, m, x + rng.normal(0, rad * 0.5), y + rng.normal(0, rad * 0.5),
                     rad * rng.uniform(0.4, 0.8), v * rng.uniform(0.7, 1.0), rng.uniform(0.5, 1.0), rng.uniform(0, 180))
    return pts


def record(eye, canvas, rng, name, pts, severity, location=None):
    """Record a finding located at one of its lesions."""
    if pts:
        x, y = pts[int(rng.integers(len(pts)))]
        canvas.add_finding(name, location or eye.location(x, y), severity)
