"""The canvas: the image being built, shared lesion maps, masks and findings, and their compositing."""
from __future__ import annotations

import cv2
import numpy as np

# lesion maps composited once after all findings are drawn: name -> how it changes the image
LESION_MAPS = ("red", "bright", "white", "dark")


class Canvas:
    def __init__(self, size: int):
        self.S = size
        self.img: np.ndarray | None = None     # float32 RGB in [0, ~1], set by the background layer
        self.maps: dict[str, np.ndarray] = {}  # float32 S x S maps (lesion and vessel channels)
        self.masks: dict[str, np.ndarray] = {}
        self.structures: dict[str, np.ndarray] = {}  # whole anatomical structures (optic disc, cup), in every render
        self.findings: list[dict] = []
        self.state: dict = {}                  # facts a layer leaves for later layers (e.g. disc geometry)

    def map(self, name: str) -> np.ndarray:
        """A float32 S x S drawing map, created empty on first use."""
        m = self.maps.get(name)
        if m is None:
            m = self.maps[name] = np.zeros((self.S, self.S), np.float32)
        return m

    def mask(self, name: str) -> np.ndarray:
        """The uint8 mask of finding ``name``, created empty on first use."""
        m = self.masks.get(name)
        if m is None:
            m = self.masks[name] = np.zeros((self.S, self.S), np.uint8)
        return m

    def structure(self, name: str) -> np.ndarray:
        """The bool mask of anatomical structure ``name`` (e.g. "optic_disc"), created empty on first use.
        Unlike finding masks these are drawn for healthy eyes too: dense targets for the cup-to-disc ratio."""
        m = self.structures.get(name)
        if m is None:
            m = self.structures[name] = np.zeros((self.S, self.S), bool)
        return m

    def add_finding(self, name: str, location: str, severity: str) -> None:
        """Record a finding once (the first location and severity win)."""
        if not any(f["name"] == name for f in self.findings):
            self.findings.append({"name": name, "location": location, "severity": severity})

    def blend(self, alpha, colour, sl=(slice(None), slice(None))):
        """img = img * (1 - alpha) + colour * alpha over a region (alpha H x W [x 1], colour RGB or image)."""
        if alpha.ndim == 2:
            alpha = alpha[..., None]
        sub = self.img[sl]
        sub[:] = sub * (1 - alpha) + colour * alpha

    def _bbox(self, m, pad):
        """Region of interest round the non-zero pixels of a map (None when the map is empty)."""
        rows = np.flatnonzero(m.any(axis=1))
        if rows.size == 0:
            return None
        cols = np.flatnonzero(m[rows[0]:rows[-1] + 1].any(axis=0))
        S = self.S
        return (slice(max(0, rows[0] - pad), min(S, rows[-1] + pad + 1)),
                slice(max(0, cols[0] - pad), min(S, cols[-1] + pad + 1)))

    def composite_lesions(self, rng, bright_colour_jitter=(0.9, 1.05)):
        """Haemorrhage absorption, yellow exudate/drusen, whitish cotton-wool/fibrosis, dark pigment; each
        map is composited only over the box that holds its lesions."""
        S = self.S
        R = self.state.get("R", S / 2)
        red = self.maps.pop("red", None)
        sl = None if red is None else self._bbox(red, 3)
        if sl is not None:
            r = np.clip(red[sl], 0, 1.2)
            if S >= 256:
                r = cv2.GaussianBlur(r, (3, 3), 0)
            absorb = cv2.transform(r[..., None], np.array([[0.3], [0.74], [0.68]], np.float32))
            self.img[sl] *= 1.0 - absorb
        bright = self.maps.pop("bright", None)
        sl = None if bright is None else self._bbox(bright, 3)
        if sl is not None:
            b = np.clip(cv2.GaussianBlur(bright[sl], (3, 3), 0), 0, 1)[..., None] * 0.85
            ycol = np.array([1.0, 0.9, 0.45], np.float32) * rng.uniform(*bright_colour_jitter)
            self.img[sl] = self.img[sl] * (1 - b) + ycol * b
        white = self.maps.pop("white", None)
        sig = max(0.7, 0.006 * R)
        sl = None if white is None else self._bbox(white, int(3 * sig) + 2)
        if sl is not None:
            w = np.clip(cv2.GaussianBlur(white[sl], (0, 0), sig), 0, 1)[..., None] * 0.8
            self.img[sl] = self.img[sl] * (1 - w) + np.array([1.0, 0.93, 0.85], np.float32) * w
        dark = self.maps.pop("dark", None)
        sl = None if dark is None else self._bbox(dark, 3)
        if sl is not None:
            d = np.clip(cv2.GaussianBlur(dark[sl], (3, 3), 0), 0, 1)[..., None]
            self.img[sl] *= 1 - d * np.array([0.75, 0.78, 0.8], np.float32)
