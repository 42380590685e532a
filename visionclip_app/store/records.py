"""What the case log stores: its records (analysis, review, case), limits, validation and small helpers."""
from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import io
import json
import math
import sqlite3
from typing import Any

from PIL import Image

VERDICTS = ("agree", "disagree", "ungradable")
ITEM_STATES = ("pending", "analysed", "reviewed", "skipped")
MAX_READINGS = 2  # double reading
BUSY_TIMEOUT_MS = 30_000
THUMBNAIL_MAX_SIDE = 256
CSV_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

# Columns returned by search()/exports (the blobs are left out).
LIST_COLUMNS = [
    "id", "created_at", "updated_at", "reviewer", "verdict", "predicted_label", "corrected_labels",
    "confidence", "notes", "model_id", "saliency_method", "saliency_target", "saliency_class", "image_sha256",
    "prompt_set_sha256", "probabilities", "prompt_set_json", "original_filename", "patient_id",
    "n_revisions", "adapter",
]


WORKLIST_EXPORT_COLUMNS = [
    "position", "image", "item_sha256", "reading", "reviewer", "read_at", "case_id", "verdict", "corrected_labels",
    "confidence", "notes", "predicted_label", "probabilities", "model_id", "prompt_set_sha256",
]


class StoreError(ValueError):
    """Bad input to the store (one line, safe to show to a user)."""


def _unavailable(e: sqlite3.Error) -> str:
    """One line for a database the operating system will not let us use; a write was rolled back whole."""
    msg = str(e).lower()
    if "readonly" in msg or "read-only" in msg:
        why = "the case log is read-only"
    elif "full" in msg or "disk i/o" in msg:
        why = "the case log's disk is full or failing"
    elif "unable to open" in msg:
        why = "the case log cannot be opened (read-only, full or missing folder)"
    elif "locked" in msg or "busy" in msg:
        why = "the case log is busy"
    else:
        why = f"the case log cannot be used ({' '.join(str(e).split())[:120]})"
    return f"Case log unavailable: {why}; nothing was changed. Analyses still work; save again once it is fixed."


def _storable(text: str | None, what: str) -> str | None:
    """Text SQLite can store: lone surrogates (which a JSON payload can carry) are refused in one line."""
    if text is None:
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise StoreError(f"{what} contains characters that are not valid Unicode text.") from None
    return text


def _file_name(name: str | None) -> str | None:
    """A file name that was not UTF-8 on disk (surrogate-escaped bytes) is kept readable, not refused."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace") if name else None


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def strip_and_thumbnail(image: Image.Image, max_side: int = THUMBNAIL_MAX_SIDE, fmt: str = "PNG") -> bytes:
    """Return a small PNG/JPEG of ``image`` rebuilt from raw pixels: no EXIF, XMP, ICC or text chunks."""
    im = image.convert("RGB")
    im.thumbnail((max_side, max_side))
    clean = Image.frombytes("RGB", im.size, im.tobytes())  # a fresh image: carries no .info at all
    buf = io.BytesIO()
    if fmt.upper() == "JPEG":
        clean.save(buf, format="JPEG", quality=85)
    else:
        clean.save(buf, format="PNG", compress_level=3)  # 4x faster to write than the default 6, 11% larger
    return buf.getvalue()


MAX_REVIEWER_CHARS = 100
MAX_LABEL_CHARS = 200
MAX_NOTES_CHARS = 5000


@dataclasses.dataclass(frozen=True, kw_only=True)
class Analysis:
    """What the model said about one image: the part of a case the reviewer does not write."""

    image_sha256: str
    thumbnail: bytes
    prompt_set_json: str
    prompt_set_sha256: str
    probabilities: dict[str, float]
    model_id: str
    predicted_label: str
    saliency_method: str | None = None
    saliency_target: str | None = None  # softmax | similarity: which score the map explains
    saliency_class: str | None = None
    saliency_thumbnail: bytes | None = None
    original_filename: str | None = None  # stored only with the reviewer's opt-in
    adapter: str | None = None  # JSON: the few-shot adapter (file name, SHA-256, ...) that gave the probabilities


@dataclasses.dataclass(frozen=True, kw_only=True)
class Review:
    """One reviewer's verdict on a case. ``validated()`` applies the review rules, which live only here."""

    reviewer: str
    verdict: str
    corrected_labels: tuple[str, ...] | list[str] | str | None = ()
    confidence: float | str | None = None
    notes: str = ""

    def validated(self) -> "Review":
        """A normalised copy (names and labels whitespace-collapsed, confidence a float), or StoreError."""
        reviewer = _storable(" ".join(str(self.reviewer or "").split()), "The reviewer name")
        if not reviewer:
            raise StoreError("Enter the reviewer's name.")
        if len(reviewer) > MAX_REVIEWER_CHARS:
            raise StoreError(f"Reviewer name is too long ({MAX_REVIEWER_CHARS} characters at most).")
        verdict = str(self.verdict or "").strip().lower()
        if verdict not in VERDICTS:
            raise StoreError(f"Choose a verdict: {', '.join(VERDICTS)}.")
        labels = parse_labels(self.corrected_labels)
        for label in labels:
            _storable(label, "A corrected label")
        if verdict == "disagree" and not labels:
            raise StoreError("A 'disagree' verdict needs at least one corrected label.")
        notes = _storable(str(self.notes or ""), "The notes")
        if len(notes) > MAX_NOTES_CHARS:
            raise StoreError(f"Notes are too long ({len(notes)} characters; {MAX_NOTES_CHARS} at most).")
        return Review(reviewer=reviewer, verdict=verdict, corrected_labels=labels,
                      confidence=parse_confidence(self.confidence), notes=notes)


@dataclasses.dataclass(frozen=True)
class CaseRecord:
    """One analysed image and its first review."""

    analysis: Analysis
    review: Review
    store_identifiers: bool = False   # the reviewer's opt-in: keep the file name and patient identifier
    patient_id: str | None = None

    @classmethod
    def of(cls, **fields) -> "CaseRecord":
        """A record from flat keyword arguments (analysis, review and record fields mixed), for scripts."""
        review_keys = {f.name for f in dataclasses.fields(Review)}
        record_keys = {"store_identifiers", "patient_id"}
        return cls(Analysis(**{k: v for k, v in fields.items() if k not in review_keys | record_keys}),
                   Review(**{k: v for k, v in fields.items() if k in review_keys}),
                   **{k: v for k, v in fields.items() if k in record_keys})


def parse_labels(value: Any) -> tuple[str, ...]:
    """Corrected labels from a list or a comma-separated string: whitespace collapsed, blanks and repeats dropped."""
    if value is None:
        return ()
    if isinstance(value, str):
        value = value.split(",")
    out: list[str] = []
    for v in value:
        v = " ".join(str(v).split())
        if len(v) > MAX_LABEL_CHARS:
            raise StoreError(f"A corrected label is too long ({MAX_LABEL_CHARS} characters at most).")
        if v and v not in out:
            out.append(v)
    return tuple(out)


def parse_confidence(value: Any) -> float | None:
    if value is None or value == "":
        return None
    try:
        c = float(value)
    except (TypeError, ValueError):
        raise StoreError("Confidence must be a number between 0 and 1.") from None
    if not math.isfinite(c) or not 0.0 <= c <= 1.0:
        raise StoreError("Confidence must be a number between 0 and 1.")
    return c


def reviewer_label(row: dict) -> str | None:
    """The reviewer's label for a case: the prediction when they agreed, their first correction when not.

    The one rule for what a review teaches: agreement statistics, reader agreement and the labelled examples
    handed to the engine's adapters all use it. ``row`` has the case columns verdict, predicted_label and
    corrected_labels (JSON)."""
    if row.get("verdict") == "agree":
        return row.get("predicted_label")
    if row.get("verdict") == "disagree":
        try:
            labels = json.loads(row.get("corrected_labels") or "[]")
        except ValueError:
            labels = []
        return str(labels[0]) if labels else None
    return None  # ungradable
