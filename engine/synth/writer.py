"""Write a synthetic dataset folder in the SynFundus-1M layout: images/<idx>.png, masks/<idx>.npz, labels.csv.

labels.csv has the 15 SynFundus-1M columns exactly, in their order, then this project's extensions
(see engine.synth.schema). idx is the row position, as in the real file, and also the last column.
"""
from __future__ import annotations

import csv
import ctypes
import io
import os
import shutil
import tempfile
import zipfile
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np

from engine.errors import VisionCLIPError
from engine.synth.captions import build_caption
from engine.synth.dataset import worker_start_method
from engine.synth.pipeline import get_pipeline
from engine.synth.render import render_fundus
from engine.synth.schema import LABEL_COLUMNS, check_eye_side_zero, parse_conditions, to_file_row


# PNG through libpng (OpenCV): zlib level 1 with the run-length strategy and one fixed row filter
# ("up") encodes a 512 px render in about half the time of Pillow's adaptive filter at the same level
# and strategy, for files about 8% larger (~155 KB); the pixels are lossless either way.
PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE,
              cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP]


def png_bytes(image: np.ndarray) -> bytes:
    """Lossless PNG of an RGB (or grey) uint8 image."""
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", image, PNG_PARAMS)
    if not ok:
        raise VisionCLIPError("Could not encode the image as PNG.")
    return buf.tobytes()


def _zip_member(zf: zipfile.ZipFile, name: str, arr: np.ndarray) -> None:
    b = io.BytesIO()
    np.lib.format.write_array(b, np.ascontiguousarray(arr), allow_pickle=False)
    zi = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))  # fixed timestamp: identical runs, identical bytes
    zi.compress_type = zipfile.ZIP_DEFLATED
    zf.writestr(zi, b.getvalue(), compresslevel=1)


def pack_mask_bits(masks: list) -> np.ndarray:
    """The same array as ``np.packbits(np.stack(masks), axis=0)`` (bit k of plane k // 8, most
    significant first, is mask k), built by shifting each mask into its plane: packbits along the
    first axis walks the stack with a stride per bit and costs several times more."""
    h, w = np.shape(masks[0])
    planes = np.zeros(((len(masks) + 7) // 8, h, w), np.uint8)
    shifted = np.empty((h, w), np.uint8)
    for k, m in enumerate(masks):
        m = np.ascontiguousarray(m, dtype=bool).view(np.uint8)
        np.left_shift(m, 7 - k % 8, out=shifted)
        np.bitwise_or(planes[k // 8], shifted, out=planes[k // 8])
    return planes


def masks_npz_bytes(masks: dict, structures: dict | None = None) -> bytes:
    """All finding masks of one image in one npz: ``names`` (bit order) and ``bits`` (bit k of
    bits[k // 8] is mask names[k]), so k masks cost k/8 bytes a pixel before compression. The
    anatomical structures (optic disc and cup, drawn in every render) go in the same file as
    ``structure_names`` / ``structure_bits``, apart from the findings the caption names.

    Read back with :func:`load_masks` and :func:`load_structures`."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for prefix, group in (("", masks), ("structure_", structures)):
            if group is None:
                continue
            names = sorted(group)
            _zip_member(zf, prefix + "names.npy", np.array(names, dtype="U"))
            if names:
                _zip_member(zf, prefix + "bits.npy", pack_mask_bits([group[n] for n in names]))
    return buf.getvalue()


def keep_freed_buffers() -> None:
    """Let freed image-sized buffers stay in this process's heap (glibc; a no-op elsewhere).

    A render allocates and frees dozens of full-frame float arrays; by default glibc hands buffers this
    large back to the system and the next one is page-faulted in again (~900 faults and 2-3 ms of
    system time an image at 512 px). Raising the mmap and trim thresholds serves them from the heap
    instead; the process then keeps up to the trim threshold of freed memory. Process-wide, so it is
    set by the dataset writer (the `visionclip synth` process and its workers), not on import."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):
        return
    mallopt(-3, 64 << 20)   # M_MMAP_THRESHOLD: buffers under 64 MB come from the heap
    mallopt(-1, 256 << 20)  # M_TRIM_THRESHOLD: keep up to 256 MB of freed heap


def _init_worker() -> None:
    """Pool initializer: each worker renders one image at a time, so OpenCV's own threads would only
    oversubscribe the cores; set here, in the workers, not on import (that would slow the whole app)."""
    import cv2

    cv2.setNumThreads(1)
    keep_freed_buffers()


def _unpack(z, prefix: str) -> dict:
    names = [str(n) for n in z[prefix + "names"]] if prefix + "names" in z.files else []
    if not names:
        return {}
    bits = np.unpackbits(z[prefix + "bits"], axis=0, count=len(names)).astype(bool)
    return dict(zip(names, bits))


def load_mask_file(path) -> tuple[dict, dict]:
    """({finding name: bool mask}, {structure name: bool mask}) from one masks/<idx>.npz written by
    :func:`generate_dataset`, read once; the structures are empty in files written before the
    renderer kept them."""
    with np.load(path, allow_pickle=False) as z:
        return _unpack(z, ""), _unpack(z, "structure_")


def load_masks(path) -> dict:
    """{finding name: bool mask} from a masks/<idx>.npz written by :func:`generate_dataset`."""
    return load_mask_file(path)[0]


def load_structures(path) -> dict:
    """{structure name: bool mask} ("optic_disc", "optic_cup") from a masks/<idx>.npz."""
    return load_mask_file(path)[1]


def _one(args):
    i, seed, size, conditions, tmp, pipeline, eye_side_zero = args
    kwargs = {"pipeline": pipeline} if pipeline is not None else {}  # renderers without pipelines take none
    s = render_fundus(seed + i, size, conditions, **kwargs)
    idx = str(i)  # SynFundus-1M names images by row position: <idx>.png
    with open(os.path.join(tmp, "images", idx + ".png"), "wb") as fh:
        fh.write(png_bytes(s.image))
    with open(os.path.join(tmp, "masks", idx + ".npz"), "wb") as fh:
        fh.write(masks_npz_bytes(s.masks, s.structures))
    rng = np.random.default_rng([seed, i, 11])
    return to_file_row(s.labels, build_caption(s.labels, s.findings, rng), s.findings,
                       getattr(s, "generator_version", None), idx, eye_side_zero)


def _check(out_dir, n, seed, size, workers, conditions):
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise VisionCLIPError(f"Number of images must be a positive integer, got {n!r}.")
    if isinstance(size, bool) or not isinstance(size, int) or not 64 <= size <= 4096:
        raise VisionCLIPError(f"Image size must be an integer from 64 to 4096, got {size!r}.")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise VisionCLIPError(f"Seed must be a non-negative integer, got {seed!r}.")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise VisionCLIPError(f"Workers must be a positive integer, got {workers!r}.")
    parse_conditions(conditions)
    out = Path(out_dir)
    if out.exists():
        if not out.is_dir():
            raise VisionCLIPError(f"Output path {out} exists and is not a folder.")
        if any(out.iterdir()):
            raise VisionCLIPError(f"Output folder {out} is not empty.")
    parent = out.resolve().parent
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK | os.X_OK):
        raise VisionCLIPError(f"Output folder {out} is not writable.")
    return out


def generate_dataset(out_dir, n, seed=0, size=512, workers=1, conditions=None, progress=True, pipeline=None,
                     eye_side_zero="right") -> Path:
    """Render n images into out_dir atomically; same arguments give byte-identical files.

    pipeline: renderer pipeline name, passed on only when given. eye_side_zero: which eye
    eye_side 0 means in labels.csv ("right", as assumed for SynFundus-1M, or "left"). Calls
    :func:`keep_freed_buffers` (process-wide) so the renders' buffers are not page-faulted in anew."""
    out = _check(out_dir, n, seed, size, workers, conditions)
    check_eye_side_zero(eye_side_zero)  # before anything is written
    keep_freed_buffers()
    parent = out.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=parent)
    except OSError as e:
        raise VisionCLIPError(f"Cannot write to {out}: {e.strerror or e}.") from None
    try:
        os.makedirs(os.path.join(tmp, "images"))
        os.makedirs(os.path.join(tmp, "masks"))
        if isinstance(pipeline, str):  # workers get the Pipeline itself: one registered at run time renders too
            pipeline = get_pipeline(pipeline)
        jobs = [(i, seed, size, conditions, tmp, pipeline, eye_side_zero) for i in range(n)]
        from tqdm import tqdm
        bar = tqdm(total=n, desc="synth", unit="img", disable=not progress)
        rows = []
        if workers == 1:
            for j in jobs:
                rows.append(_one(j))
                bar.update(1)
        else:
            with get_context(worker_start_method()).Pool(workers, initializer=_init_worker) as pool:
                for r in pool.imap(_one, jobs, chunksize=max(1, min(16, n // (workers * 4) or 1))):
                    rows.append(r)
                    bar.update(1)
        bar.close()
        with open(os.path.join(tmp, "labels.csv"), "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(LABEL_COLUMNS)
            w.writerows(rows)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError):
            raise VisionCLIPError(f"Cannot write dataset to {out}: {e.strerror or e}.") from None
        raise
    return out
