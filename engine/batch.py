"""Zero-shot prediction over many files and folders, in batches, one result per file.

A file that cannot be read becomes a result with an ``error`` and the run goes on: a folder of 200
photographs with one corrupt file still gives 199 predictions.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from .dicom import DICOM_EXTENSIONS, has_dicom_magic
from .errors import VisionCLIPError
from .preprocess import load_image_with_meta
from .prompts import PromptSet
from .screening import hierarchical_prediction, screen

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


def _chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def screening_result(screening, i: int) -> dict:
    """One photograph's screening decision as results report it."""
    return {"decision": screening.decision(i), "p_abnormal": float(screening.p_abnormal[i]),
            "threshold": screening.threshold}


def predict_files(model, files: Sequence[str | os.PathLike], prompt_set: PromptSet, batch_size: int = 32,
                  progress: Callable[[int, int], None] | None = None) -> Iterator[dict]:
    """Per file, in order: ``{"image", "predicted", "screening", "probabilities"[, "subclass_probabilities"][,
    "laterality"]}`` or ``{"image", "error"}``. ``screening`` (engine.screening; absent for a set
    without a normal class) is normal or finding with P(abnormal); ``predicted`` is then normal or the
    most probable condition. Files are decoded and encoded ``batch_size`` at a
    time; ``progress(done, total)`` is called after each file's result."""
    if batch_size < 1:
        raise VisionCLIPError(f"batch size must be at least 1, not {batch_size}")
    done, total = 0, len(files)
    for chunk in _chunks(list(files), batch_size):
        results: list[dict] = []
        tensors, scored = [], []
        for path in chunk:
            result = {"image": str(path)}
            try:
                image, meta = load_image_with_meta(path)
                tensors.append(model.image_tensor(image))
                scored.append(result)
                if "laterality" in meta:
                    result["laterality"] = meta["laterality"]
            except VisionCLIPError as e:
                result["error"] = str(e)
            results.append(result)
        if tensors:
            embeddings = model.encode_images(tensors, batch_size=batch_size)
            class_probs, subs = model.class_and_subclass_probabilities(embeddings, prompt_set)
            screening = screen(model, embeddings, prompt_set, class_probs)
            predicted = hierarchical_prediction(class_probs.numpy(), prompt_set.classes, screening)
            for i, (result, row, sub_row) in enumerate(zip(scored, class_probs, subs)):
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
