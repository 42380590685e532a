"""Write a synthetic SynFundus-1M style dataset folder: images/, masks/, labels.csv."""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
import zipfile
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image

from engine.errors import VisionCLIPError
from engine.synth.captions import build_caption
from engine.synth.pipeline import get_pipeline
from engine.synth.render import render_fundus
from engine.synth.schema import LABEL_COLUMNS, parse_conditions


def _npz_bytes(masks: dict) -> bytes:
    """Deterministic compressed npz (fixed zip timestamps)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(masks):
            arr = np.ascontiguousarray(masks[name], dtype=bool)
            b = io.BytesIO()
            np.lib.format.write_array(b, arr, allow_pickle=False)
            zi = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            zi.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(zi, b.getvalue())
    return buf.getvalue()


def _one(args):
    i, seed, size, conditions, tmp, pipeline = args
    s = render_fundus(seed + i, size, conditions, pipeline)
    idx = f"{i:07d}"
    Image.fromarray(s.image).save(os.path.join(tmp, "images", idx + ".png"), optimize=False, compress_level=6)
    with open(os.path.join(tmp, "masks", idx + ".npz"), "wb") as fh:
        fh.write(_npz_bytes(s.masks))
    rng = np.random.default_rng([seed, i, 11])
    row = {"idx": idx, **s.labels, "caption": build_caption(s.labels, s.findings, rng),
           "findings": json.dumps(s.findings, separators=(",", ":"))}
    return [row.get(c, "") for c in LABEL_COLUMNS]


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


def generate_dataset(out_dir, n, seed=0, size=512, workers=1, conditions=None, progress=True, pipeline=None) -> Path:
    """Render n images into out_dir atomically; same arguments give byte-identical files."""
    out = _check(out_dir, n, seed, size, workers, conditions)
    get_pipeline(pipeline)  # an unknown pipeline name is a clear error before anything is written
    parent = out.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=parent)
    except OSError as e:
        raise VisionCLIPError(f"Cannot write to {out}: {e.strerror or e}.") from None
    try:
        os.makedirs(os.path.join(tmp, "images"))
        os.makedirs(os.path.join(tmp, "masks"))
        jobs = [(i, seed, size, conditions, tmp, pipeline) for i in range(n)]
        from tqdm import tqdm
        bar = tqdm(total=n, desc="synth", unit="img", disable=not progress)
        rows = []
        if workers == 1:
            for j in jobs:
                rows.append(_one(j))
                bar.update(1)
        else:
            with get_context("spawn" if os.name == "nt" else "fork").Pool(workers) as pool:
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
