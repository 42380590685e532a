"""Worklists: a queue of images to review, each item pending -> analysed -> reviewed (or skipped)."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from .records import (ITEM_STATES, MAX_LABEL_CHARS, MAX_READINGS, WORKLIST_EXPORT_COLUMNS, Analysis, CaseRecord,
                      StoreError, utc_now)


class WorklistsMixin:
    """Worklists, their items and readings; a reading is logged as a case."""

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
