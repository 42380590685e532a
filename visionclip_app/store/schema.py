"""The case log's schema, versioned by ordered migrations, and its connections and transactions."""
from __future__ import annotations

import contextlib
import sqlite3
import threading
from pathlib import Path
from typing import Callable, Iterator

import sqlite_utils

from .records import BUSY_TIMEOUT_MS, StoreError, _unavailable, utc_now


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



class StoreBase:
    """Opens (and migrates) the SQLite file. Thread-safe: each call opens its own short-lived connection."""
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

