"""The reviewed cases as labelled examples for the engine's few-shot adapters, read from the log read-only.

A case's label is decided by its latest revision (with a reviewer given: that reviewer's latest) through
:func:`~visionclip_app.store.records.reviewer_label`: "agree" keeps the predicted label, "disagree" takes the
first corrected label; ungradable cases and disagreements without a corrected label are left out. The same
photograph (image SHA-256) logged twice counts once, its latest case winning. The images are the stored
thumbnails (at most 256 px a side, metadata stripped): the originals are not kept.
"""
from __future__ import annotations

import io
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import sqlite_utils
from PIL import Image, UnidentifiedImageError

from engine.errors import VisionCLIPError

from .records import reviewer_label


@dataclass
class ReviewedCase:
    case_id: int
    label: str
    image: Image.Image  # the stored thumbnail, RGB
    image_sha256: str
    reviewer: str
    verdict: str


def _open_read_only(db_path: Path) -> sqlite_utils.Database:
    if not db_path.is_file():
        raise VisionCLIPError(f"case database not found: {db_path}")
    try:
        conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
        db = sqlite_utils.Database(conn)
        tables = set(db.table_names())
    except sqlite3.DatabaseError:
        raise VisionCLIPError(f"{db_path.name} is not an SQLite database") from None
    if not {"cases", "revisions"} <= tables:
        raise VisionCLIPError(f"{db_path.name} is not a VisionCLIP case log (no cases/revisions tables)")
    return db


def read_reviewed_cases(db_path: str | Path, reviewer: str | None = None) -> list[ReviewedCase]:
    """Agreed or corrected, gradable cases with their final label and thumbnail, oldest first."""
    db_path = Path(db_path)
    db = _open_read_only(db_path)
    try:
        where, args = "", []
        if reviewer:
            where, args = "where lower(r.reviewer) = lower(?)", [" ".join(reviewer.split())]
        rows = list(db.query(
            "select c.id as case_id, c.predicted_label, c.image_sha256, c.thumbnail, r.reviewer, r.verdict, "
            "r.corrected_labels, r.revision from cases c join revisions r on r.case_id = c.id "
            f"{where} order by c.id, r.revision", args))
    except sqlite3.DatabaseError as e:
        raise VisionCLIPError(f"{db_path.name}: cannot read its cases ({e})") from None
    finally:
        db.conn.close()
    latest: dict[int, dict] = {}
    for row in rows:  # ordered by revision: the last one seen per case is its latest
        latest[row["case_id"]] = row
    by_image: dict[str, ReviewedCase] = {}
    for case_id, row in latest.items():
        label = reviewer_label(row)
        if label is None or not row["thumbnail"]:
            continue
        try:
            image = Image.open(io.BytesIO(row["thumbnail"])).convert("RGB")
        except (UnidentifiedImageError, OSError):
            continue  # a damaged thumbnail: the case cannot teach anything
        by_image[row["image_sha256"]] = ReviewedCase(case_id, label, image, row["image_sha256"], row["reviewer"],
                                                     row["verdict"])
    cases = sorted(by_image.values(), key=lambda c: c.case_id)
    if not cases:
        who = f" by reviewer '{reviewer}'" if reviewer else ""
        raise VisionCLIPError(f"{db_path.name} has no agreed or corrected, gradable cases{who} to learn from")
    return cases
