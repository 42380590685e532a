"""CaseStore: the review log of the VisionCLIP app, one SQLite file managed with sqlite-utils.

One clear API (everything else in this package is private):

    store = CaseStore("visionclip_cases.db")
    case_id = store.log_case(CaseRecord(Analysis(...), Review(...)))  # new case + its first review revision
    store.add_revision(case_id, Review(...))             # a correction: appended, never overwritten
    store.get_case(case_id)                              # dict with thumbnails and "history"
    store.search(reviewer=, label=, verdict=, date_from=, date_to=, text=)  # list of dicts, no blobs
    store.export_csv(path, rows) / store.export_json(path, rows)
    store.agreement(rows)                                # model-vs-reviewer agreement
    store.schema_version
    read_reviewed_cases(path, reviewer)                  # labelled examples for the engine's adapters

Design:
* Privacy: a case keeps the image SHA-256 and a small thumbnail re-encoded from raw pixels (no EXIF,
  no text chunks, no ICC profile). The original file name and a patient identifier are stored only when
  the caller passes ``store_identifiers=True`` (the UI's opt-in box); otherwise they are NULL.
* History: every review is a row in ``revisions``; triggers forbid UPDATE and DELETE on that table.
  ``cases`` mirrors the latest revision (verdict, labels, ...) so it can be filtered quickly.
* Schema: versioned; ``MIGRATIONS`` is an ordered list of functions, each applied once inside a
  transaction and recorded in ``schema_migrations``.
* Concurrency: WAL journal, a busy timeout, one short-lived connection per operation and
  ``BEGIN IMMEDIATE`` for writes, so several app sessions (threads or processes) can log at once.

Modules, one concern each: ``records`` (what a case holds, limits, validation, the reviewer-label rule),
``schema`` (migrations, connections, transactions), ``cases`` (the case log), ``worklists`` (reading queues),
``reviewed`` (reviewed cases as labelled examples). ``CaseStore`` composes them.
"""
from .cases import CasesMixin
from .records import (CSV_FORMULA_STARTS, ITEM_STATES, LIST_COLUMNS, MAX_LABEL_CHARS, MAX_NOTES_CHARS, MAX_READINGS,
                      MAX_REVIEWER_CHARS, THUMBNAIL_MAX_SIDE, VERDICTS, WORKLIST_EXPORT_COLUMNS, Analysis, CaseRecord,
                      Review, StoreError, parse_confidence, parse_labels, reviewer_label, sha256_bytes,
                      strip_and_thumbnail, utc_now)
from .reviewed import ReviewedCase, read_reviewed_cases
from .schema import MIGRATIONS, SCHEMA_VERSION, StoreBase
from .worklists import WorklistsMixin


class CaseStore(WorklistsMixin, CasesMixin, StoreBase):
    """The app's case log. Thread-safe: each call opens its own short-lived connection."""


__all__ = [
    "CaseStore", "StoreError", "Analysis", "Review", "CaseRecord", "ReviewedCase", "read_reviewed_cases",
    "reviewer_label", "parse_labels", "parse_confidence", "sha256_bytes", "strip_and_thumbnail", "utc_now",
    "MIGRATIONS", "SCHEMA_VERSION", "VERDICTS", "ITEM_STATES", "MAX_READINGS", "MAX_REVIEWER_CHARS",
    "MAX_LABEL_CHARS", "MAX_NOTES_CHARS", "THUMBNAIL_MAX_SIDE", "LIST_COLUMNS", "WORKLIST_EXPORT_COLUMNS",
    "CSV_FORMULA_STARTS",
]
