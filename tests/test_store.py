"""CaseStore: schema, migrations, privacy, append-only revisions, search, export, concurrency."""
from __future__ import annotations

import csv
import io
import json
import sqlite3
import threading

import pytest
import sqlite_utils
from PIL import Image

from visionclip_app.store import (
    MIGRATIONS, SCHEMA_VERSION, Analysis, CaseRecord, CaseStore, Review, StoreError, sha256_bytes,
    strip_and_thumbnail,
)



def _record(**kw) -> CaseRecord:
    """A case record from flat keyword arguments (analysis, review and record fields mixed)."""
    base = dict(
        reviewer="Dr A", verdict="agree", image_sha256=sha256_bytes(b"img"), thumbnail=b"\x89PNG",
        prompt_set_json=json.dumps({"normal": ["a normal fundus"]}), prompt_set_sha256="ab" * 32,
        probabilities={"normal": 0.7, "dr": 0.3}, model_id="m1", predicted_label="normal",
        saliency_method="gradcam", saliency_class="normal",
    )
    return CaseRecord.of(**{**base, **kw})


def _review(**kw) -> Review:
    return Review(**{"reviewer": "Dr B", "verdict": "agree", **kw})


@pytest.fixture
def store(tmp_path):
    return CaseStore(tmp_path / "cases.db")


def test_schema_and_wal(store, tmp_path):
    assert store.schema_version == SCHEMA_VERSION == len(MIGRATIONS)
    assert [m["version"] for m in store.migrations()] == [v for v, _, _ in MIGRATIONS]
    assert store.journal_mode() == "wal"
    db = sqlite_utils.Database(tmp_path / "cases.db")
    assert {"cases", "revisions", "schema_migrations"} <= set(db.table_names())
    cols = db["cases"].columns_dict
    for c in ("created_at", "reviewer", "image_sha256", "thumbnail", "prompt_set_json", "prompt_set_sha256",
              "probabilities", "model_id", "saliency_method", "saliency_class", "predicted_label",
              "original_filename", "patient_id", "saliency_thumbnail"):
        assert c in cols


def test_migrations_upgrade_old_database_and_are_idempotent(tmp_path):
    path = tmp_path / "old.db"
    old = CaseStore(path, target_version=1)
    assert old.schema_version == 1
    db = sqlite_utils.Database(path)
    assert "saliency_thumbnail" not in db["cases"].columns_dict
    db["cases"].insert({"created_at": "2020-01-01T00:00:00+00:00", "reviewer": "x", "verdict": "agree",
                        "image_sha256": "h", "model_id": "m", "predicted_label": "normal"})
    db.close()
    new = CaseStore(path)
    assert new.schema_version == SCHEMA_VERSION
    assert new.count() == 1
    cols = sqlite_utils.Database(path)["cases"].columns_dict
    assert "saliency_thumbnail" in cols and "saliency_target" in cols
    CaseStore(path)  # re-opening applies nothing twice
    assert len(new.migrations()) == len(MIGRATIONS)


def test_log_case_roundtrip_and_identifiers_opt_in(store):
    cid = store.log_case(_record(original_filename="patient_123.jpg", patient_id="P123"))
    case = store.get_case(cid)
    assert case["reviewer"] == "Dr A" and case["verdict"] == "agree"
    assert case["original_filename"] is None and case["patient_id"] is None  # not opted in
    assert json.loads(case["probabilities"]) == {"dr": 0.3, "normal": 0.7}
    assert case["created_at"].endswith("+00:00")
    assert len(case["history"]) == 1
    cid2 = store.log_case(_record(original_filename="a.jpg", patient_id="P9", store_identifiers=True))
    case2 = store.get_case(cid2)
    assert case2["original_filename"] == "a.jpg" and case2["patient_id"] == "P9"


@pytest.mark.parametrize("kw, msg", [
    (dict(reviewer="  "), "reviewer"),
    (dict(reviewer="x" * 101), "too long"),
    (dict(verdict="maybe"), "verdict"),
    (dict(verdict="disagree"), "corrected label"),
    (dict(verdict="disagree", corrected_labels=" ,  "), "corrected label"),
    (dict(corrected_labels=["x" * 201]), "label is too long"),
    (dict(notes="n" * 5001), "Notes"),
    (dict(confidence=float("inf")), "Confidence"),
    (dict(patient_id="p" * 300, store_identifiers=True), "Patient identifier"),
    (dict(confidence=1.5), "Confidence"),
    (dict(confidence="abc"), "Confidence"),
    (dict(image_sha256=""), "analysed image"),
])
def test_log_case_rejects_bad_values(store, kw, msg):
    with pytest.raises(StoreError, match=msg):
        store.log_case(_record(**kw))
    assert store.count() == 0


def test_revisions_are_append_only(store, tmp_path):
    cid = store.log_case(_record())
    assert store.add_revision(cid, _review(verdict="disagree", corrected_labels=["dr"], confidence=0.9,
                                      notes="microaneurysms")) == 2
    assert store.add_revision(cid, _review(reviewer="Dr C", verdict="ungradable")) == 3
    hist = store.history(cid)
    assert [h["revision"] for h in hist] == [1, 2, 3]
    assert [h["verdict"] for h in hist] == ["agree", "disagree", "ungradable"]
    case = store.get_case(cid)
    assert case["verdict"] == "ungradable" and case["n_revisions"] == 3
    conn = sqlite3.connect(tmp_path / "cases.db")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("update revisions set verdict = 'agree'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("delete from revisions")
    conn.close()
    with pytest.raises(StoreError, match="No case"):
        store.add_revision(999, _review())
    with pytest.raises(StoreError, match="corrected label"):  # the review rules hold for corrections too
        store.add_revision(cid, _review(verdict="disagree"))
    assert store.get_case(cid)["n_revisions"] == 3


def test_search_filters(store):
    a = store.log_case(_record(reviewer="Ann", predicted_label="normal", verdict="agree", notes="clear"))
    b = store.log_case(_record(reviewer="Bob", predicted_label="normal", verdict="disagree",
                               corrected_labels=["glaucoma"]))
    c = store.log_case(_record(reviewer="Bob", predicted_label="dr", verdict="ungradable"))
    ids = lambda rows: sorted(r["id"] for r in rows)  # noqa: E731
    assert ids(store.search()) == [a, b, c]
    assert ids(store.search(reviewer="bob")) == [b, c]
    assert ids(store.search(verdict="disagree")) == [b]
    assert ids(store.search(label="glaucoma")) == [b]
    assert ids(store.search(label="normal")) == [a, b]
    assert ids(store.search(text="CLEAR")) == [a]
    today = store.get_case(a)["created_at"][:10]
    assert ids(store.search(date_from=today, date_to=today)) == [a, b, c]
    assert store.search(date_to="2000-01-01") == []
    assert "thumbnail" not in store.search()[0]
    assert store.distinct("reviewer") == ["Ann", "Bob"]


def test_export_csv_and_json(store, tmp_path):
    store.log_case(_record(notes='comma, "quote"\nnewline'))
    cid = store.log_case(_record(reviewer="Bob"))
    store.add_revision(cid, _review(reviewer="Bob", verdict="disagree", corrected_labels=["dr"]))
    p = store.export_csv(tmp_path / "out.csv")
    rows = list(csv.DictReader(p.open(encoding="utf-8")))
    assert len(rows) == 2
    assert rows[1]["notes"] == 'comma, "quote"\nnewline'
    assert rows[0]["verdict"] == "disagree" and json.loads(rows[0]["corrected_labels"]) == ["dr"]
    j = json.loads(store.export_json(tmp_path / "out.json").read_text())
    assert j["schema_version"] == SCHEMA_VERSION
    assert len(j["cases"]) == 2 and len(j["cases"][0]["history"]) == 2
    assert j["cases"][0]["probabilities"] == {"dr": 0.3, "normal": 0.7}


def test_agreement(store):
    store.log_case(_record(verdict="agree", predicted_label="normal"))
    store.log_case(_record(verdict="disagree", predicted_label="normal", corrected_labels=["dr"]))
    store.log_case(_record(verdict="ungradable", predicted_label="dr"))
    ag = store.agreement()
    assert ag["n"] == 2 and ag["n_cases"] == 3 and ag["n_ungradable"] == 1
    assert ag["agreement_rate"] == 0.5
    assert ag["labels"] == ["dr", "normal"]
    assert ag["matrix"] == [[0, 1], [0, 1]]  # rows reviewer, cols model
    assert CaseStore.agreement(store, rows=[])["agreement_rate"] is None


def test_thumbnail_strips_metadata():
    im = Image.new("RGB", (800, 600), (120, 40, 20))
    exif = Image.Exif()
    exif[0x010E] = "PATIENT NAME"  # ImageDescription
    buf = io.BytesIO()
    im.save(buf, format="JPEG", exif=exif.tobytes())
    src = Image.open(io.BytesIO(buf.getvalue()))
    assert "exif" in src.info
    for fmt in ("PNG", "JPEG"):
        out = strip_and_thumbnail(src, fmt=fmt)
        assert b"PATIENT NAME" not in out and b"Exif" not in out
        t = Image.open(io.BytesIO(out))
        assert max(t.size) <= 256 and not t.getexif()
        assert "exif" not in t.info and "icc_profile" not in t.info


def test_concurrent_writes(tmp_path):
    path = tmp_path / "conc.db"
    CaseStore(path)
    errors = []

    def worker(k):
        s = CaseStore(path)  # one store per session, as in the app
        try:
            for i in range(100):
                cid = s.log_case(_record(reviewer=f"r{k}", notes=str(i)))
                if i % 25 == 0:
                    s.add_revision(cid, _review(reviewer=f"r{k}", verdict="disagree", corrected_labels=["dr"]))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    s = CaseStore(path)
    assert s.count() == 800
    db = sqlite_utils.Database(path)
    assert db["revisions"].count == 800 + 8 * 4


def test_review_normalises_labels_names_and_confidence():
    r = Review(reviewer="  Dr   A ", verdict=" Disagree ", corrected_labels="dr,  glaucoma , dr,", confidence="0.25")
    v = r.validated()
    assert (v.reviewer, v.verdict, v.corrected_labels, v.confidence) == ("Dr A", "disagree", ("dr", "glaucoma"), 0.25)
    assert Review(reviewer="x", verdict="agree", confidence="").validated().confidence is None


# --- worklists ------------------------------------------------------------------------------------
def _analysis(label="normal", sha="s1") -> Analysis:
    return _record(predicted_label=label, image_sha256=sha).analysis


def test_worklist_states_progress_and_next_unread(store):
    wid = store.create_worklist("clinic A", [f"/data/{i}.png" for i in range(1, 5)])
    assert store.worklist_progress(wid) == {"pending": 4, "analysed": 0, "reviewed": 0, "skipped": 0, "total": 4}
    items = store.worklist_items(wid)
    assert [it["position"] for it in items] == [1, 2, 3, 4] and {it["state"] for it in items} == {"pending"}
    store.set_item_analysis(items[0]["id"], _analysis("glaucoma"))
    store.set_item_analysis(items[1]["id"], _analysis("normal"))
    store.skip_item(items[2]["id"])
    cid = store.log_reading(items[0]["id"], _record(reviewer="Ann", predicted_label="glaucoma"))
    assert store.get_case(cid)["reviewer"] == "Ann"
    assert store.worklist_progress(wid) == {"pending": 1, "analysed": 1, "reviewed": 1, "skipped": 1, "total": 4}
    assert [it["position"] for it in store.worklist_items(wid, predicted_label="glaucoma")] == [1]
    assert [it["position"] for it in store.worklist_items(wid, state="analysed")] == [2]
    assert [it["position"] for it in store.worklist_items(wid, reviewer="ann")] == [2, 3, 4]
    store.set_item_analysis(items[0]["id"], _analysis("normal"))  # re-analysing keeps a reviewed item reviewed
    assert store.worklist_item(wid, 1)["state"] == "reviewed" and store.worklist_item(wid, 1)["readers"] == ["Ann"]
    with pytest.raises(StoreError, match="already"):
        store.log_reading(items[0]["id"], _record(reviewer="Bob"))  # single reading: the item is done


@pytest.mark.parametrize("name, paths, readings, msg", [
    ("", ["a.png"], 1, "Name"), ("x", [], 1, "at least one image"), ("x", ["a.png"], 3, "1 to 2 readings"),
])
def test_worklist_rejects_bad_values(store, name, paths, readings, msg):
    with pytest.raises(StoreError, match=msg):
        store.create_worklist(name, paths, readings)
    assert store.worklists() == []


def test_double_reading_kappa_and_export(store, tmp_path):
    wid = store.create_worklist("double", [f"/data/{i}.png" for i in range(1, 5)], readings=2)
    items = store.worklist_items(wid)
    ann = ["normal", "glaucoma", "normal", "glaucoma"]
    bob = ["normal", "glaucoma", "glaucoma", "glaucoma"]
    for it, a, b in zip(items, ann, bob):
        store.log_reading(it["id"], _record(reviewer="Ann", predicted_label="normal", verdict="agree" if a == "normal"
                                            else "disagree", corrected_labels=[] if a == "normal" else [a]))
        assert store.worklist_item(wid, it["position"])["state"] == "pending"  # one reading of two
        with pytest.raises(StoreError, match="already read"):
            store.log_reading(it["id"], _record(reviewer="ann"))
        store.log_reading(it["id"], _record(reviewer="Bob", predicted_label="normal", verdict="agree" if b == "normal"
                                            else "disagree", corrected_labels=[] if b == "normal" else [b]))
    assert store.worklist_progress(wid)["reviewed"] == 4
    from sklearn.metrics import cohen_kappa_score
    ag = store.reader_agreement(wid)
    assert ag["n"] == 4 and ag["observed"] == 0.75 and ag["kappa"] == pytest.approx(cohen_kappa_score(ann, bob))

    rows = list(csv.DictReader(store.export_worklist(wid, tmp_path / "w.csv", "csv").open(encoding="utf-8")))
    assert [(int(r["position"]), int(r["reading"]), r["reviewer"]) for r in rows] == [
        (p, k, who) for p in (1, 2, 3, 4) for k, who in ((1, "Ann"), (2, "Bob"))]
    assert {r["model_id"] for r in rows} == {"m1"} and {r["prompt_set_sha256"] for r in rows} == {"ab" * 32}
    assert [r["image"] for r in rows[:2]] == ["1.png", "1.png"] and "/data" not in rows[0]["image"]
    doc = json.loads(store.export_worklist(wid, tmp_path / "w.json", "json").read_text())
    assert len(doc["readings"]) == 8 and doc["reader_agreement"]["n"] == 4 and doc["worklist"]["readings"] == 2
    with pytest.raises(StoreError, match="csv or json"):
        store.export_worklist(wid, tmp_path / "w.xlsx", "xlsx")


def test_worklist_csv_export_neutralises_formulas(store, tmp_path):
    wid = store.create_worklist("f", ["/data/1.png"])
    store.log_reading(store.worklist_items(wid)[0]["id"], _record(notes='=HYPERLINK("http://x")'))
    row = next(csv.DictReader(store.export_worklist(wid, tmp_path / "f.csv", "csv").open(encoding="utf-8")))
    assert row["notes"] == '\'=HYPERLINK("http://x")'
