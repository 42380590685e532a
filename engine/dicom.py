"""DICOM input (Ophthalmic Photography): pixel data as an RGB image, and the eye it shows.

Fundus cameras export DICOM files whose pixel data is uncompressed or JPEG-compressed, in RGB, YBR
(YCbCr), monochrome (red-free photographs) or palette colour. pydicom reads them, with pylibjpeg's
decoders (or Pillow's) for the JPEG transfer syntaxes. Only the image laterality is read from the
header: no patient attribute ever leaves this module.
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import Image

from .errors import VisionCLIPError

DICOM_EXTENSIONS = (".dcm", ".dicom")
_LATERALITIES = {"R", "L", "B"}  # right, left, both eyes (DICOM PS3.3 C.7.6.1.1.1); "U" (unpaired) is no eye side
DicomSource = Union[str, os.PathLike, bytes, bytearray, BinaryIO]


IMAGE_SIGNATURES = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"II*\x00", b"MM\x00*", b"BM", b"RIFF")


def has_dicom_magic(head: bytes) -> bool:
    """True for the start of a DICOM Part 10 file: a 128-byte preamble, then 'DICM'."""
    return len(head) >= 132 and head[128:132] == b"DICM"


def is_dicom(source: DicomSource) -> bool:
    """A DICOM file by its extension or its magic bytes (files from cameras often have no extension)."""
    if isinstance(source, (bytes, bytearray)):
        return has_dicom_magic(bytes(source[:132]))
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            with open(path, "rb") as fh:
                head = fh.read(132)
        except OSError:
            return path.suffix.lower() in DICOM_EXTENSIONS
        if has_dicom_magic(head):
            return True
        # A .dcm name decides only when the content is no common image (a PNG renamed .dcm is a PNG).
        return path.suffix.lower() in DICOM_EXTENSIONS and not head.startswith(IMAGE_SIGNATURES)
    if hasattr(source, "read") and hasattr(source, "seek"):
        try:
            pos = source.tell()
            head = source.read(132)
            source.seek(pos)
        except (OSError, ValueError):
            return False
        return has_dicom_magic(head)
    return False


def _to_uint8(arr: np.ndarray, bits: int) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if np.issubdtype(arr.dtype, np.floating) or arr.dtype.kind == "i":  # windowed or signed: stretch its range
        lo, hi = float(arr.min()), float(arr.max())
        return ((arr.astype(np.float64) - lo) / max(hi - lo, 1e-9) * 255.0).round().astype(np.uint8)
    return (arr.astype(np.float64) / float(2 ** bits - 1) * 255.0).clip(0, 255).round().astype(np.uint8)


def _rgb_pixels(ds, arr: np.ndarray) -> np.ndarray:
    """Decoded pixels (one frame) as (H, W, 3) uint8 RGB, honouring the photometric interpretation."""
    from pydicom.pixels import apply_color_lut, apply_voi_lut

    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    bits = int(ds.get("BitsStored", 8) or 8)
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(arr, ds)[..., :3]
        return _to_uint8(rgb, 16 if rgb.dtype == np.uint16 else 8)
    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        if "WindowCenter" in ds or "VOILUTSequence" in ds:
            arr = apply_voi_lut(arr, ds)  # the window the camera chose for display
        grey = _to_uint8(arr, bits)
        if photometric == "MONOCHROME1":  # minimum value is white
            grey = 255 - grey
        return np.repeat(grey[..., None], 3, axis=-1)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise VisionCLIPError(f"unsupported DICOM pixel layout {arr.shape} for {photometric or 'no'} photometric interpretation")
    return _to_uint8(arr, bits)  # RGB; YBR_FULL(_422) and JPEG's YCbCr were converted to RGB on decoding


def _laterality(ds) -> str | None:
    for keyword in ("ImageLaterality", "Laterality"):  # the image's own first, then the series'
        value = str(ds.get(keyword, "") or "").strip().upper()
        if value in _LATERALITIES:
            return value
    return None


def read_dicom(source: DicomSource, max_pixels: int | None = None, name: str = "image") -> tuple[Image.Image, dict]:
    """The first frame of a DICOM file as an RGB PIL image, and {"laterality": "R"/"L"/"B",
    "frames": N} (each only when known). Raises a one-line VisionCLIPError for a broken file."""
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import pixel_array

    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(bytes(source))
    try:
        ds = pydicom.dcmread(source)
    except InvalidDicomError:
        raise VisionCLIPError(f"{name}: not a DICOM file (no DICM header)") from None
    except Exception as e:  # pydicom raises many types on a truncated or garbled header
        raise VisionCLIPError(f"{name}: broken DICOM header ({type(e).__name__})") from None
    if "PixelData" not in ds:
        raise VisionCLIPError(f"{name}: DICOM file has no pixel data (truncated, or not an image)")
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if max_pixels and rows * cols > max_pixels:
        raise VisionCLIPError(f"{name}: image is too large ({cols}x{rows} pixels; the limit is {max_pixels:,})")
    meta: dict = {}
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        meta["frames"] = frames
        warnings.warn(f"{name}: DICOM file has {frames} frames; the first is used", stacklevel=2)
    try:
        arr = pixel_array(ds, index=0 if frames > 1 else None)  # decodes only that frame
        rgb = _rgb_pixels(ds, arr)
    except VisionCLIPError as e:
        raise VisionCLIPError(f"{name}: {e}") from None
    except Exception as e:  # decoders raise ValueError, RuntimeError, NotImplementedError, ... on bad data
        lines = [line.strip() for line in str(e).splitlines() if line.strip()] or [type(e).__name__]
        detail = " ".join(lines[:2]) if lines[0].endswith(":") else lines[0]  # "...all plugins:" + the first
        raise VisionCLIPError(f"{name}: cannot decode DICOM pixel data ({detail[:120]})") from None
    laterality = _laterality(ds)
    if laterality:
        meta["laterality"] = laterality
    return Image.fromarray(np.ascontiguousarray(rgb), "RGB"), meta
