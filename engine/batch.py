"""Zero-shot prediction over many files and folders, in batches, one result per file.

A file that cannot be read becomes a result with an ``error`` and the run goes on: a folder of 200
photographs with one corrupt file still gives 199 predictions.
"""
from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import torch

from .dicom import DICOM_EXTENSIONS, has_dicom_magic
from .errors import VisionCLIPError
from .preprocess import load_image_with_meta
from .prompts import PromptSet
from .screening import hierarchical_prediction, screen

# Threads that decode and preprocess while the network runs. PIL's decoder and resampler and numpy's
# array arithmetic release the GIL, so threads overlap with each other and with torch's own threads;
# more than this buys nothing on the machines the CLI and the app run on.
MAX_PREPARE_WORKERS = 4

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".gif", *DICOM_EXTENSIONS})


@dataclass
class ExpandedInputs:
    """The files to predict on, in order, and how many files in the folders were not images."""

    files: list[Path] = field(default_factory=list)
    ignored: int = 0  # files in the folders with no image extension and no DICOM magic (notes, CSVs, ...)


def _is_image_file(path: Path) -> bool:
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return True
    if path.suffix:  # a known non-image extension: not worth opening
        return False
    try:  # DICOM from cameras often has no extension at all (IM000001)
        with open(path, "rb") as fh:
            return has_dicom_magic(fh.read(132))
    except OSError:
        return False


def expand_inputs(inputs: Iterable[str | os.PathLike], recursive: bool = False) -> ExpandedInputs:
    """Files as given (whatever their name: a file named on purpose is read, or reported); each
    folder replaced by its image files, sorted, those of its subfolders too with ``recursive``.
    Hidden files and folders (.DS_Store, ._x.jpg) are skipped."""
    out = ExpandedInputs()
    for item in inputs:
        path = Path(item)
        if not path.is_dir():
            out.files.append(path)
            continue
        found = path.rglob("*") if recursive else path.glob("*")
        candidates = sorted(p for p in found if p.is_file()
                            and not any(part.startswith(".") for part in p.relative_to(path).parts))
        for p in candidates:
            if _is_image_file(p):
                out.files.append(p)
            else:
                out.ignored += 1
    return out


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


@dataclass
class PreparedInput:
    """One source made ready for the network: its (3, S, S) tensor and what the file says about the
    eye, or the one-line reason it could not be read."""

    tensor: torch.Tensor | None = None
    meta: dict = field(default_factory=dict)
    error: str | None = None


def _prepare_one(model, source) -> PreparedInput:
    if isinstance(source, torch.Tensor):
        return PreparedInput(model.image_tensor(source))
    try:
        image, meta = load_image_with_meta(source)
        return PreparedInput(model.image_tensor(image), {k: meta[k] for k in ("laterality",) if k in meta})
    except VisionCLIPError as e:
        return PreparedInput(error=str(e))


def prepare_inputs(model, sources: Iterable, ahead: int = 64, workers: int | None = None) -> Iterator[PreparedInput]:
    """Per source, in order, a :class:`PreparedInput`, decoded and preprocessed on a pool of threads.

    At most ``ahead`` sources are in flight or waiting to be taken, so memory stays bounded however
    many files there are (``ahead`` tensors of 3 x S x S floats: 26 MB at 320 px and 64).
    """
    sources = iter(sources)
    workers = workers or min(MAX_PREPARE_WORKERS, os.cpu_count() or 1)
    if workers <= 1 or ahead <= 1:
        yield from (_prepare_one(model, s) for s in sources)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="visionclip-prepare") as pool:
        pending: deque = deque(pool.submit(_prepare_one, model, s) for _, s in zip(range(ahead), sources))
        try:
            while pending:
                done = pending.popleft()
                for s in sources:  # keep ``ahead`` in flight
                    pending.append(pool.submit(_prepare_one, model, s))
                    break
                yield done.result()
        finally:  # the caller stopped early: do not decode the rest
            for f in pending:
                f.cancel()


def screening_result(screening, i: int) -> dict:
    """One photograph's screening decision as results report it."""
    return {"decision": screening.decision(i), "p_abnormal": float(screening.p_abnormal[i]),
            "threshold": screening.threshold}


def predict_files(model, files: Sequence[str | os.PathLike], prompt_set: PromptSet, batch_size: int = 32,
                  progress: Callable[[int, int], None] | None = None) -> Iterator[dict]:
    """Per file, in order: ``{"image", "predicted", "screening", "probabilities"[, "subclass_probabilities"][,
    "laterality"]}`` or ``{"image", "error"}``. ``screening`` (engine.screening; absent for a set
    without a normal class) is normal or finding with P(abnormal); ``predicted`` is then normal or the
    most probable condition. Files are decoded and preprocessed on threads while the network encodes
    the previous ``batch_size`` of them; ``progress(done, total)`` is called after each file's result."""
    if batch_size < 1:
        raise VisionCLIPError(f"batch size must be at least 1, not {batch_size}")
    files = list(files)
    done, total = 0, len(files)
    prepared = prepare_inputs(model, files, ahead=2 * batch_size)
    tower = model.image_tower_for(total)
    for chunk in _chunks(zip(files, prepared), batch_size):
        results = [{"image": str(path), **item.meta, **({"error": item.error} if item.error else {})}
                   for path, item in chunk]
        scored = [(r, item.tensor) for r, (_, item) in zip(results, chunk) if item.error is None]
        if scored:
            embeddings = model.encode_tensors([t for _, t in scored], tower)
            class_probs, subs = model.class_and_subclass_probabilities(embeddings, prompt_set)
            screening = screen(model, embeddings, prompt_set, class_probs)
            predicted = hierarchical_prediction(class_probs.numpy(), prompt_set.classes, screening)
            for i, ((result, _), row, sub_row) in enumerate(zip(scored, class_probs, subs)):
                result["predicted"] = predicted[i]
                if screening is not None:
                    result["screening"] = screening_result(screening, i)
                result["probabilities"] = dict(zip(prompt_set.classes, map(float, row)))
                if prompt_set.has_subclasses:  # what each grouped class's probability is made of
                    result["subclass_probabilities"] = dict(zip(prompt_set.scored_names(), map(float, sub_row)))
        for result in results:
            done += 1
            if progress:
                progress(done, total)
            yield result


def summarise(results: Iterable[dict], ignored: int = 0) -> dict:
    """Counts for the summary line: images scored, files with errors, files ignored in folders."""
    results = list(results)
    errors = sum("error" in r for r in results)
    return {"images": len(results), "predicted": len(results) - errors, "errors": errors, "ignored": ignored}
