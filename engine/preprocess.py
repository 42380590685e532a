"""Fundus-aware image loading and preprocessing.

Photographs arrive in any size, aspect ratio and mode. Each is turned upright (EXIF), converted to
RGB, cropped to the fundus disc (the bright field inside the camera's dark surround), padded to a
square with black and resized to the model's input. The crop geometry is kept so that maps computed
on the model input (saliency) can be drawn back on the original photograph.
"""
from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from .dicom import is_dicom, read_dicom
from .errors import VisionCLIPError

DEFAULT_MAX_PIXELS = 64_000_000  # ~8000x8000: larger than any fundus camera writes
# The fundus is padded to a square of its longest side: a 20000x8 strip (a 300-byte PNG) would become a
# 1.2 GB square. No fundus camera writes a side this long, so it is refused before decoding.
MAX_SIDE = 8192
ImageSource = Union[str, os.PathLike, bytes, bytearray, io.IOBase, Image.Image, np.ndarray]
ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, not a grey half-image


def _describe(source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return Path(source).name
    return "image"


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = arr.max() if arr.size and arr.max() > 0 else 1.0
        img = Image.fromarray((arr / hi * 255.0).clip(0, 255).astype(np.uint8))
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))  # fundus surround is black
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB")


def load_image(source: ImageSource, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open any supported image (DICOM included) as an upright RGB PIL image, or raise a one-line
    VisionCLIPError."""
    return load_image_with_meta(source, max_pixels)[0]


def load_image_with_meta(source: ImageSource, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[Image.Image, dict]:
    """:func:`load_image`, and what the file says about the eye beyond its pixels: for a DICOM file
    {"laterality": "R"/"L"/"B", "frames": N} where present (see engine.dicom); {} otherwise. Never
    patient attributes."""
    name = _describe(source)
    meta: dict = {}
    if isinstance(source, np.ndarray):
        if source.ndim not in (2, 3) or source.size == 0:
            raise VisionCLIPError(f"{name}: array of shape {source.shape} is not an image")
        arr = source
        if arr.dtype != np.uint8:
            arr = np.clip(arr * (255.0 if arr.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
        source = Image.fromarray(arr)
    if isinstance(source, Image.Image):
        img = source
    else:
        if isinstance(source, (bytes, bytearray)):
            if not source:
                raise VisionCLIPError("image: the file is empty (0 bytes)")
            fp = io.BytesIO(source)
        elif isinstance(source, (str, os.PathLike)):
            path = Path(source)
            if not path.is_file():
                raise VisionCLIPError(f"{name}: no such image file")
            if path.stat().st_size == 0:
                raise VisionCLIPError(f"{name}: the file is empty (0 bytes)")
            fp = path
        else:
            fp = source
        if is_dicom(fp):
            img, meta = read_dicom(fp, max_pixels, name)
        else:
            img = _open_header(fp, name)
    w, h = img.size
    if w < 8 or h < 8:
        raise VisionCLIPError(f"{name}: image is too small ({w}x{h} pixels)")
    if max_pixels and w * h > max_pixels:
        raise VisionCLIPError(f"{name}: image is too large ({w}x{h} pixels; the limit is {max_pixels:,})")
    if max_pixels and max(w, h) > MAX_SIDE:
        raise VisionCLIPError(f"{name}: image is too large ({w}x{h} pixels; the longest side may be {MAX_SIDE:,})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img.load()
            img = ImageOps.exif_transpose(img)
            return _to_rgb(img), meta
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise VisionCLIPError(f"{name}: image is too large (decompression bomb refused)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise VisionCLIPError(f"{name}: corrupt or truncated image ({str(e).splitlines()[0][:80]})") from None


def _open_header(fp, name: str) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(fp)  # reads the header only: size is checked before decoding
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise VisionCLIPError(f"{name}: not a readable image ({type(e).__name__})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise VisionCLIPError(f"{name}: image is too large (decompression bomb refused)") from None


def fundus_mask(rgb: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """Boolean mask of the illuminated field of view: pixels brighter than the dark surround."""
    # The red channel is bright across the retina and near zero in the camera's surround.
    lum = rgb[..., 0].astype(np.float32) * 0.6 + rgb[..., 1].astype(np.float32) * 0.4
    return lum > (fov_threshold(lum) if threshold is None else threshold)


def fov_threshold(lum: np.ndarray) -> float:
    """The level between the camera's surround and the fundus, relative to this photograph's own
    levels: a fixed floor cut the field of view of an under-exposed but complete photograph."""
    surround, bright = (float(v) for v in np.percentile(lum, [5, 99]))  # a framed photograph's surround is well over 5% of it
    if surround > 0.2 * bright:  # no dark surround: the fundus fills the frame
        return max(12.0, 0.1 * bright)
    return surround + max(SURROUND_NOISE, 0.1 * (bright - surround))


SURROUND_NOISE = 4.0  # 0-255: sensor and JPEG noise on the black surround stays below this


def fundus_box(rgb: np.ndarray) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the fundus disc; the whole image when no surround is found."""
    h, w = rgb.shape[:2]
    mask = fundus_mask(rgb)
    if mask.mean() < 0.02:  # nearly black: nothing to crop to
        return 0, 0, w, h
    # Rows/columns holding a meaningful run of bright pixels; ignores specks in the surround.
    cols = np.flatnonzero(mask.mean(axis=0) > 0.02)
    rows = np.flatnonzero(mask.mean(axis=1) > 0.02)
    if len(cols) == 0 or len(rows) == 0:
        return 0, 0, w, h
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def disc_centre(rgb: np.ndarray) -> tuple[int, int]:
    """(y, x) of the brightest blurred spot away from the border: the optic disc, found by one rule in
    real and synthetic photographs (a bright lesion or glare can win; good enough to compare crops)."""
    import cv2

    h, w = rgb.shape[:2]
    lum = cv2.GaussianBlur(rgb.astype(np.float32).mean(axis=2), (0, 0), max(2.0, w / 60))
    inner = np.zeros_like(lum)
    m = int(0.12 * w)
    inner[m:h - m, m:w - m] = lum[m:h - m, m:w - m]
    y, x = np.unravel_index(int(inner.argmax()), inner.shape)
    return int(y), int(x)


def square_crop(rgb: np.ndarray, y: int, x: int, fraction: float, out: int | None = None) -> np.ndarray:
    """Square crop of side ``fraction`` x the image width round (y, x), zero-padded at the border,
    resized to ``out`` px when given."""
    import cv2

    half = int(fraction * rgb.shape[1] / 2)
    pad = np.pad(rgb, ((half, half), (half, half), (0, 0)))
    tile = pad[y:y + 2 * half, x:x + 2 * half]
    return tile if out is None else cv2.resize(tile, (out, out), interpolation=cv2.INTER_AREA)


def local_contrast(rgb: np.ndarray, fov: np.ndarray | None = None, sigma_fraction: float = 1 / 30,
                   gain: float = 4.0) -> np.ndarray:
    """Subtract each pixel's local mean colour inside the fundus (Graham, Kaggle DR 2015).

    Illumination, vignetting and the camera's colour cast are slow changes across the field; vessels,
    lesions, the cup and the rim are fast ones. Keeping only the fast ones narrows the gap between
    rendered and photographed fundi. The mean is taken over the fundus only, so the dark surround
    does not draw a halo along the rim. Returns float32 in [0, 1], 0 outside the fundus.
    """
    import cv2

    x = rgb.astype(np.float32) / 255.0
    fov = (fundus_mask(rgb) if fov is None else fov).astype(np.float32)
    sigma = max(1.0, rgb.shape[0] * sigma_fraction)
    weight = cv2.GaussianBlur(fov, (0, 0), sigma)
    local_mean = cv2.GaussianBlur(x * fov[..., None], (0, 0), sigma) / np.maximum(weight, 1e-3)[..., None]
    return (np.clip(gain * (x - local_mean) + 0.5, 0.0, 1.0) * fov[..., None]).astype(np.float32)


def fundus_mean(rgb: np.ndarray, fov: np.ndarray) -> np.ndarray:
    """Mean colour (float32 RGB in [0, 1]) of the fundus pixels ``fov`` of a uint8 image."""
    import cv2

    # cv2.mean sums the masked pixels in float64: exact for any photograph, 20 times faster than
    # numpy's float32 mean of rgb[fov], whose rounding it does not share
    means = cv2.mean(np.ascontiguousarray(rgb), np.ascontiguousarray(fov).view(np.uint8))[:3]
    return (np.asarray(means, dtype=np.float64) / 255.0).astype(np.float32)


def colour_gain(rgb: np.ndarray, target, fov: np.ndarray | None = None, max_gain: float = 4.0,
                mean: np.ndarray | None = None) -> np.ndarray:
    """Scale each channel so that the fundus's mean colour is ``target`` (RGB in [0, 1]).

    Exposure and the camera's white balance differ from photograph to photograph and between cameras
    far more than between the rendered images a model trains on; a per-image gain removes that shift
    and keeps every spatial detail (vessels, lesions, the cup). The gain is capped so that a nearly
    black photograph is not blown up into noise. Returns float32 in [0, 1], 0 outside the fundus.
    ``mean`` (:func:`fundus_mean`) is the fundus colour when it was measured on another image, e.g.
    when ``rgb`` is a table of levels; ``fov`` is then ``None`` and nothing is masked.
    """
    x = rgb.astype(np.float32) / 255.0
    if mean is None:
        fov = fundus_mask(rgb) if fov is None else fov
        if not fov.any():
            return x
        mean = fundus_mean(rgb, fov)
    gain = np.clip(np.asarray(target, dtype=np.float32) / np.maximum(mean, 1e-3), 1 / max_gain, max_gain)
    out = np.clip(x * gain, 0.0, 1.0)
    return (out if fov is None else out * fov[..., None]).astype(np.float32)


@dataclass
class PreparedImage:
    """A model-ready tensor and the geometry that maps it back onto the original photograph."""

    tensor: torch.Tensor  # (3, S, S), normalised
    original_size: tuple[int, int]  # (width, height)
    box: tuple[int, int, int, int]  # fundus crop in original pixels
    square: int  # side of the padded square, in original pixels
    offset: tuple[int, int]  # where the crop sits inside that square
    fov: np.ndarray  # (S, S) bool: the fundus field of view on the model input

    def to_original(self, input_map: np.ndarray) -> np.ndarray:
        """Resample a map over the model input (S x S) onto the original image (H x W), zero outside."""
        import cv2

        sq = cv2.resize(input_map.astype(np.float32), (self.square, self.square), interpolation=cv2.INTER_LINEAR)
        l, t, r, b = self.box
        ox, oy = self.offset
        out = np.zeros((self.original_size[1], self.original_size[0]), dtype=np.float32)
        out[t:b, l:r] = sq[oy : oy + (b - t), ox : ox + (r - l)]
        return out

    def to_input(self, original_map: np.ndarray) -> np.ndarray:
        """The inverse of ``to_original``: a map (or mask) over the original (H x W) onto the model input (S x S)."""
        import cv2

        l, t, r, b = self.box
        ox, oy = self.offset
        sq = np.zeros((self.square, self.square), dtype=np.float32)
        sq[oy : oy + (b - t), ox : ox + (r - l)] = np.asarray(original_map, dtype=np.float32)[t:b, l:r]
        side = self.fov.shape[0]
        return cv2.resize(sq, (side, side), interpolation=cv2.INTER_AREA)


class FundusTransform:
    """Callable PIL -> normalised tensor: crop to the fundus, pad square, resize, normalise.

    With ``colour_target`` each photograph's mean fundus colour is scaled to that colour first (see
    :func:`colour_gain`); with ``local_contrast`` the fundus's local mean colour is subtracted before
    normalisation (see :func:`local_contrast`). A model trained so must be fed so, which its config
    records.
    """

    def __init__(self, image_size: int = 224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), crop: bool = True,
                 local_contrast: bool = False, colour_target=None):
        self.image_size = int(image_size)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
        self._mean_hwc = np.asarray(mean, dtype=np.float32)
        self._std_hwc = np.asarray(std, dtype=np.float32)
        self.crop = crop
        self.local_contrast = bool(local_contrast)
        self.colour_target = None if colour_target is None else tuple(float(c) for c in colour_target)

    def square_fundus(self, img: Image.Image) -> tuple[Image.Image, tuple[int, int, int, int], int, tuple[int, int]]:
        rgb = np.asarray(img)
        box = fundus_box(rgb) if self.crop else (0, 0, img.width, img.height)
        l, t, r, b = box
        side = max(r - l, b - t)
        offset = ((side - (r - l)) // 2, (side - (b - t)) // 2)
        square = Image.new("RGB", (side, side))
        square.paste(img.crop(box), offset)
        return square, box, side, offset

    def prepare(self, image: ImageSource) -> PreparedImage:
        img = load_image(image)
        square, box, side, offset = self.square_fundus(img)
        rgb = self.resize(square)
        fov = fundus_mask(rgb)
        return PreparedImage(self.normalise(rgb, fov), img.size, box, side, offset, fov)

    def resize(self, square: Image.Image) -> np.ndarray:
        resized = square.resize((self.image_size, self.image_size), Image.BICUBIC, reducing_gap=3.0)
        return np.asarray(resized, dtype=np.uint8)

    def normalise(self, rgb: np.ndarray, fov: np.ndarray | None = None) -> torch.Tensor:
        if self.local_contrast:
            if self.colour_target is not None:
                fov = fundus_mask(rgb) if fov is None else fov
                rgb = (colour_gain(rgb, self.colour_target, fov) * 255.0 + 0.5).astype(np.uint8)
            x = (local_contrast(rgb, fov) - self._mean_hwc) / self._std_hwc
            return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).permute(2, 0, 1)
        # Every step before the network is per pixel and per channel, so it is one 256-entry table a
        # channel (cv2.LUT), computed with the same float32 operations as the step-by-step form
        # (colour_gain, the uint8 rounding, scaling to [0, 1], mean and std): the same tensor in 1 ms
        # instead of 8 at 320 px. The (3, H, W) result is a view of the (H, W, 3) array, laid out as
        # channels_last wants it.
        import cv2

        levels = np.arange(256, dtype=np.uint8)[:, None].repeat(3, axis=1)  # (256, 3): every value, each channel
        if self.colour_target is None:
            x = cv2.LUT(rgb, self._normalised_levels(levels)[None])
            return torch.from_numpy(x).permute(2, 0, 1)
        fov = fundus_mask(rgb) if fov is None else fov
        if not fov.any():  # colour_gain leaves such an image as it is
            return torch.from_numpy(cv2.LUT(rgb, self._normalised_levels(levels)[None])).permute(2, 0, 1)
        gained = colour_gain(levels, self.colour_target, fov=None, mean=fundus_mean(rgb, fov))
        x = cv2.LUT(rgb, self._normalised_levels((gained * 255.0 + 0.5).astype(np.uint8))[None])
        np.copyto(x, self._normalised_levels(np.zeros((1, 3), np.uint8))[0], where=~fov[..., None])  # 0 outside the fundus
        return torch.from_numpy(x).permute(2, 0, 1)

    def _normalised_levels(self, rgb_levels: np.ndarray) -> np.ndarray:
        """Network input values (float32) of uint8 levels: scaled to [0, 1], then mean and std."""
        return np.ascontiguousarray((rgb_levels.astype(np.float32) / 255.0 - self._mean_hwc) / self._std_hwc, dtype=np.float32)

    def to_tensor(self, square: Image.Image) -> torch.Tensor:
        return self.normalise(self.resize(square))

    def __call__(self, image: ImageSource) -> torch.Tensor:
        square, *_ = self.square_fundus(load_image(image))  # classification needs no map geometry
        return self.to_tensor(square)
