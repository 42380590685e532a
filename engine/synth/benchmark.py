"""Held-out labelled synthetic sets, balanced over conditions, in the evaluation layout.

Each image is rendered with exactly one requested condition and labelled with that condition's
screening class name, so ``visionclip eval`` and ``engine.evaluate`` read it like a real folder.
Seeds are disjoint from training when the caller keeps them apart (training data use small seeds).
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image

from ..errors import VisionCLIPError
from .pipeline import get_pipeline
from .render import render_fundus
from .schema import CONDITION_FLAGS, CONDITION_KEYS, CONDITIONS, DR_CLASS, NORMAL_CLASS

HELD_OUT_SEED = 2_000_000_000


def condition_class(cond: str) -> str:
    """Screening class name of a condition key ('dr' -> 'diabetic retinopathy')."""
    if cond == "normal":
        return NORMAL_CLASS
    if cond == "dr":
        return DR_CLASS
    if cond in CONDITION_KEYS:
        return CONDITION_FLAGS[CONDITION_KEYS[cond]]
    raise VisionCLIPError(f"unknown condition '{cond}'; choose from {', '.join(CONDITIONS)}")


def benchmark_samples(n: int, seed: int = HELD_OUT_SEED, size: int = 256,
                      conditions: list[str] | None = None, pipeline=None) -> Iterator[tuple[np.ndarray, str]]:
    """(image, class name) pairs cycling over the conditions (by default, those the pipeline draws:
    a model trained on v1 renders never saw CSC): n images in all."""
    conditions = list(conditions or get_pipeline(pipeline).conditions)
    if n < len(conditions):
        raise VisionCLIPError(f"a benchmark needs at least one image per condition ({len(conditions)})")
    for i in range(n):
        cond = conditions[i % len(conditions)]
        yield render_fundus(seed + i, size, [cond], pipeline).image, condition_class(cond)


def write_benchmark(out_dir: str | Path, n: int, seed: int = HELD_OUT_SEED, size: int = 256,
                    conditions: list[str] | None = None, progress: Callable[[int, int], None] | None = None,
                    pipeline=None) -> Path:
    """Write images/*.png and labels.csv (path,label) into a new folder."""
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise VisionCLIPError(f"benchmark folder {out} exists and is not empty")
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (image, label) in enumerate(benchmark_samples(n, seed, size, conditions, pipeline)):
        name = f"images/{i:05d}.png"
        Image.fromarray(image).save(out / name, compress_level=1)
        rows.append((name, label))
        if progress:
            progress(i + 1, n)
    with (out / "labels.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "label"])
        w.writerows(rows)
    return out
