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

    def composite_lesions(self, rng, bright_colour_jitter=(0.9, 1.05)):
        """Haemorrhage absorption, yellow exudate/drusen, whitish cotton-wool/fibrosis, dark pigment."""
        img, S = self.img, self.S
        red = self.maps.pop("red", None)
        if red is not None and red.any():
            np.clip(red, 0, 1.2, out=red)
            red_b = cv2.GaussianBlur(red, (3, 3), 0) if S >= 256 else red
            absorb = cv2.transform(red_b[..., None], np.array([[0.3], [0.74], [0.68]], np.float32))
            np.subtract(1.0, absorb, out=absorb)
            img *= absorb
        bright = self.maps.pop("bright", None)
        if bright is not None and bright.any():
            b = np.clip(cv2.GaussianBlur(bright, (3, 3), 0), 0, 1)[..., None]
            ycol = np.array([1.0, 0.9, 0.45], np.float32) * rng.uniform(*bright_colour_jitter)
            img[:] = img * (1 - b * 0.85) + ycol * b * 0.85
        white = self.maps.pop("white", None)
        if white is not None and white.any():
            R = self.state.get("R", S / 2)
            wmap = np.clip(cv2.GaussianBlur(white, (0, 0), max(0.7, 0.006 * R)), 0, 1)[..., None]
            img[:] = img * (1 - wmap * 0.8) + np.array([1.0, 0.93, 0.85], np.float32) * wmap * 0.8
        dark = self.maps.pop("dark", None)
        if dark is not None and dark.any():
            dmap = np.clip(cv2.GaussianBlur(dark, (3, 3), 0), 0, 1)[..., None]
            img *= 1 - dmap * np.array([0.75, 0.78, 0.8], np.float32)
