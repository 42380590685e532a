"""Write a corpus of broken, hostile and odd image files into a folder (nothing binary is committed).

    python tests/fuzz/make_corpus.py OUT_DIR      # writes the files and OUT_DIR/manifest.json

Every case is one file with a ``kind``: ``valid`` (must give a result), ``bomb`` / ``tiny`` / ``empty``
(must be refused with a one-line error) or ``any`` (either is fine: what matters is no traceback, no
hang and bounded memory). Cases are deterministic (fixed seeds) so a failure can be reproduced.
"""
from __future__ import annotations

import io
import json
import os
import struct
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

BASE_SIZE = (96, 72)
# Truncation points and corruption points, as fractions of the file (plus a few absolute header offsets).
TRUNCATE_AT_BYTES = (1, 2, 3, 4, 8, 12, 16, 24, 32, 64, 100, 200)
TRUNCATE_AT_FRACTIONS = (0.1, 0.25, 0.4, 0.5, 0.6, 0.75, 0.9, 0.98)
CORRUPT_AT_BYTES = (0, 1, 2, 3, 6, 8, 12, 16, 20, 24, 30, 40, 60)
CORRUPT_AT_FRACTIONS = (0.2, 0.35, 0.5, 0.65, 0.8, 0.95)


def fundus(size=BASE_SIZE, seed: int = 0) -> Image.Image:
    """A small fundus-like picture: an orange disc on black with a pale optic disc."""
    rng = np.random.default_rng(seed)
    w, h = size
    img = Image.new("RGB", size, (0, 0, 0))
    d = ImageDraw.Draw(img)
    r = max(2, min(w, h) // 2 - 2)
    cx, cy = w // 2, h // 2
    d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(int(rng.integers(150, 200)), 70, 30))
    d.ellipse([cx + r // 2 - r // 6, cy - r // 6, cx + r // 2 + r // 6, cy + r // 6], fill=(240, 200, 150))
    return img


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def png_with_dims(width: int, height: int, fix_crc: bool = True) -> bytes:
    """A small valid PNG whose IHDR claims another size (a decompression bomb by its header)."""
    data = bytearray(encode(fundus(), "PNG"))
    # IHDR data starts at 16 (8 signature + 4 length + 4 tag); its CRC follows its 13 bytes.
    data[16:24] = struct.pack(">II", width, height)
    if fix_crc:
        data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return bytes(data)


def jpeg_with_dims(width: int, height: int) -> bytes:
    """A small valid JPEG whose SOF0 segment claims another size."""
    data = bytearray(encode(fundus(), "JPEG", quality=80))
    i = data.find(b"\xff\xc0")
    data[i + 5:i + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def gif_with_dims(width: int, height: int) -> bytes:
    data = bytearray(encode(fundus().convert("P"), "GIF"))
    data[6:10] = struct.pack("<HH", width, height)  # logical screen
    j = data.find(b"\x2c")  # image descriptor
    data[j + 5:j + 9] = struct.pack("<HH", width, height)
    return bytes(data)


def png_zip_text_bomb() -> bytes:
    """A PNG with a zTXt chunk that inflates to 64 MB (Pillow caps text chunks)."""
    raw = encode(fundus(), "PNG")
    text = b"Comment\x00\x00" + zlib.compress(b"A" * (64 * 2**20), 9)
    return raw[:33] + png_chunk(b"zTXt", text) + raw[33:]


def with_exif_orientation(value: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = value
    return encode(fundus(), "JPEG", exif=exif.tobytes())


def animated(fmt: str) -> bytes:
    frames = [fundus(seed=i) for i in range(3)]
    kw = {"save_all": True, "append_images": frames[1:], "duration": 100, "loop": 0}
    if fmt == "GIF":
        frames = [f.convert("P") for f in frames]
        kw["append_images"] = frames[1:]
    return encode(frames[0], fmt, **kw)


def dicom_bytes() -> bytes | None:
    """A small secondary-capture DICOM, or None when pydicom is not installed."""
    try:
        import pydicom
        from pydicom.dataset import FileDataset, FileMetaDataset
        from pydicom.uid import ExplicitVRLittleEndian, generate_uid
    except ImportError:
        return None
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    arr = np.asarray(fundus())
    ds.Rows, ds.Columns = arr.shape[:2]
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = arr.tobytes()
    ds.PatientName = "Doe^Jane"
    buf = io.BytesIO()
    try:
        pydicom.dcmwrite(buf, ds, enforce_file_format=True)  # pydicom 3
    except TypeError:
        pydicom.dcmwrite(buf, ds, write_like_original=False)  # pydicom 2
    return buf.getvalue()


def base_files() -> dict[str, tuple[str, bytes]]:
    """ext -> (format name, valid encoded bytes) for the truncation/corruption sweeps."""
    img = fundus()
    out = {
        "jpg": ("JPEG", encode(img, "JPEG", quality=85)),
        "png": ("PNG", encode(img, "PNG")),
        "tif": ("TIFF", encode(img, "TIFF", compression="tiff_deflate")),
        "gif": ("GIF", encode(img.convert("P"), "GIF")),
        "webp": ("WEBP", encode(img, "WEBP", quality=80)),
    }
    dcm = dicom_bytes()
    if dcm is not None:
        out["dcm"] = ("DICOM", dcm)
    return out


def cases() -> list[tuple[str, str, bytes]]:
    """(file name, kind, bytes) for every case."""
    out: list[tuple[str, str, bytes]] = []
    rng = np.random.default_rng(1234)
    for ext, (fmt, data) in base_files().items():
        n = len(data)
        out.append((f"valid_{fmt.lower()}.{ext}", "valid" if ext != "dcm" else "any", data))
        cuts = sorted({c for c in TRUNCATE_AT_BYTES if c < n} | {max(1, int(n * f)) for f in TRUNCATE_AT_FRACTIONS}
                      | {n - 1, n - 2})
        for c in cuts:
            out.append((f"trunc_{fmt.lower()}_{c:06d}.{ext}", "any", data[:c]))
        spots = sorted({c for c in CORRUPT_AT_BYTES if c < n} | {int(n * f) for f in CORRUPT_AT_FRACTIONS})
        for c in spots:
            bad = bytearray(data)
            bad[c] ^= 0xFF
            out.append((f"flip_{fmt.lower()}_{c:06d}.{ext}", "any", bytes(bad)))
        for k in range(3):  # a block of random garbage in the body
            bad = bytearray(data)
            at = int(rng.integers(n // 4, max(n // 4 + 1, n - 64)))
            bad[at:at + 64] = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
            out.append((f"garbage_{fmt.lower()}_{k}.{ext}", "any", bytes(bad)))
        out.append((f"zeroed_header_{fmt.lower()}.{ext}", "any", b"\0" * 32 + data[32:]))
        out.append((f"doubled_{fmt.lower()}.{ext}", "any", data + data))
        out.append((f"empty.{ext}", "empty", b""))

    img = fundus()
    png, jpg = encode(img, "PNG"), encode(img, "JPEG")
    out += [
        # Wrong extensions: the content decides, not the name.
        ("png_named.jpg", "valid", png), ("jpeg_named.png", "valid", jpg), ("png_named.dcm", "valid", png),
        ("jpeg_named.txt", "valid", jpg), ("png_no_extension", "valid", png),
        ("text_named.png", "any", b"this is not an image\n" * 20), ("text_named.jpg", "any", b"hello"),
        # Degenerate sizes.
        ("one_by_one.png", "tiny", encode(Image.new("RGB", (1, 1), (200, 80, 40)), "PNG")),
        ("one_by_one.jpg", "tiny", encode(Image.new("RGB", (1, 1), (200, 80, 40)), "JPEG")),
        ("wide_20000x2.png", "tiny", encode(Image.new("RGB", (20000, 2), (200, 80, 40)), "PNG")),
        ("tall_2x20000.png", "tiny", encode(Image.new("RGB", (2, 20000), (200, 80, 40)), "PNG")),
        ("wide_20000x8.png", "any", encode(Image.new("RGB", (20000, 8), (200, 80, 40)), "PNG")),
        ("camera_4000x3000.jpg", "valid", encode(fundus((4000, 3000)), "JPEG", quality=70)),
        # Decompression bombs by header: tiny files that claim billions of pixels.
        ("bomb_png_100000x100000.png", "bomb", png_with_dims(100_000, 100_000)),
        ("bomb_png_2147483647x1.png", "any", png_with_dims(2**31 - 1, 1)),
        ("bomb_png_65535x65535.png", "bomb", png_with_dims(65_535, 65_535)),
        ("bomb_png_badcrc.png", "any", png_with_dims(100_000, 100_000, fix_crc=False)),
        ("bomb_png_9000x9000.png", "bomb", png_with_dims(9000, 9000)),
        ("bomb_jpeg_65000x65000.jpg", "bomb", jpeg_with_dims(65_000, 65_000)),
        ("bomb_jpeg_30000x30000.jpg", "bomb", jpeg_with_dims(30_000, 30_000)),
        ("bomb_jpeg_0x0.jpg", "any", jpeg_with_dims(0, 0)),
        ("bomb_gif_65535x65535.gif", "bomb", gif_with_dims(65_535, 65_535)),
        ("bomb_png_ztxt.png", "any", png_zip_text_bomb()),
        # Animation: the first frame is analysed.
        ("animated.gif", "valid", animated("GIF")), ("animated.webp", "valid", animated("WEBP")),
        ("animated_apng.png", "valid", animated("PNG")),
        # Modes.
        ("gray16.png", "valid", encode(Image.fromarray((np.asarray(img.convert("L"), np.uint16) * 257)), "PNG")),
        ("gray16.tif", "valid", encode(Image.fromarray((np.asarray(img.convert("L"), np.uint16) * 257)), "TIFF")),
        ("float32.tif", "valid", encode(Image.fromarray(np.asarray(img.convert("L"), np.float32) / 255), "TIFF")),
        ("int32.tif", "valid", encode(img.convert("I"), "TIFF")),
        ("cmyk.jpg", "valid", encode(img.convert("CMYK"), "JPEG")),
        ("cmyk.tif", "valid", encode(img.convert("CMYK"), "TIFF")),
        ("palette_transparency.png", "valid", encode(img.convert("P"), "PNG", transparency=0)),
        ("palette_transparency.gif", "valid", encode(img.convert("P"), "GIF", transparency=0)),
        ("rgba.png", "valid", encode(img.convert("RGBA"), "PNG")), ("la.png", "valid", encode(img.convert("LA"), "PNG")),
        ("bilevel.png", "valid", encode(img.convert("1"), "PNG")), ("gray.jpg", "valid", encode(img.convert("L"), "JPEG")),
        ("lab.tif", "any", encode(img.convert("LAB"), "TIFF")),
        ("ycbcr.jpg", "valid", encode(img.convert("YCbCr"), "JPEG")),
        ("bmp.bmp", "valid", encode(img, "BMP")), ("ico.ico", "any", encode(img, "ICO")),
        ("ppm.ppm", "valid", encode(img, "PPM")), ("progressive.jpg", "valid", encode(img, "JPEG", progressive=True)),
        ("icc_garbage.png", "any", encode(img, "PNG", icc_profile=b"\x00garbage icc" * 10)),
        # Non-images.
        ("document.pdf", "any", b"%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"),
        ("script.svg", "any", b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'),
        ("script_svg_named.png", "any", b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>'),
        ("page.html", "any", b"<html><body><img src=x onerror=alert(1)></body></html>"),
        ("page_named.jpg", "any", b"<html><script>alert(1)</script></html>"),
        ("archive.zip", "any", _zip_of(png)), ("archive_named.png", "any", _zip_of(png)),
        ("random.bin", "any", rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()),
        ("random_named.jpg", "any", rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()),
        ("json_named.png", "any", b'{"not": "an image"}'), ("nul_bytes.png", "any", b"\0" * 1000),
        ("elf_named.png", "any", b"\x7fELF" + b"\0" * 200), ("utf16_text.png", "any", "\ufeffhello".encode("utf-16")),
        # Names: long, Unicode, spaces and shell characters (the non-UTF-8 one is written by write_corpus).
        ("n" * 240 + ".png", "valid", png), ("fundus ünïcödé 眼底 😀.png", "valid", png),
        ("name with spaces; $(rm -rf) `x` 'q'.png", "valid", png), ("-looks-like-an-option.png", "valid", png),
    ]
    for v in (0, 1, 3, 6, 8, 9, 255, 65535):
        out.append((f"exif_orientation_{v}.jpg", "valid", with_exif_orientation(v)))
    return out


def _zip_of(data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("inner.png", data)
    return buf.getvalue()


NON_UTF8_NAME = b"bad_name_\xff\xfe_\xc3.png"  # not valid UTF-8: os.fsdecode gives surrogates


def write_corpus(out_dir: str | os.PathLike) -> list[dict]:
    """Write every case under ``out_dir``; returns (and writes as manifest.json) [{path, kind}, ...]."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = []
    for name, kind, data in cases():
        (out_dir / name).write_bytes(data)
        manifest.append({"path": str(out_dir / name), "kind": kind})
    png = encode(fundus(), "PNG")
    bad = os.path.join(os.fsencode(out_dir), NON_UTF8_NAME)
    with open(bad, "wb") as fh:
        fh.write(png)
    manifest.append({"path": os.fsdecode(bad), "kind": "valid"})
    (out_dir / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=True), encoding="utf-8")
    return manifest


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: make_corpus.py OUT_DIR")
    m = write_corpus(sys.argv[1])
    print(f"{len(m)} files written to {sys.argv[1]}")
