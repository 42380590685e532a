"""Property tests (Hypothesis): prompt-set JSON, labels.csv, case-store inputs (issue 24).

For any input: either a clean one-line error of the documented type, or a round trip that keeps the data.
"""
from __future__ import annotations

import csv
import json

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from engine import PromptSet, VisionCLIPError
from engine.evaluate import read_labels
from visionclip_app.store import CaseRecord, CaseStore, Review, StoreError, parse_labels

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                          HealthCheck.too_slow])
# Any code point, lone surrogates and control characters included (what a JSON API payload can carry).
any_char = st.characters(exclude_categories=())
any_text = st.text(any_char, max_size=40)
json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | any_text
json_values = st.recursive(json_scalars, lambda kids: st.lists(kids, max_size=4)
                           | st.dictionaries(any_text, kids, max_size=4), max_leaves=20)


def one_line(e: Exception) -> bool:
    return "\n" not in str(e) and 0 < len(str(e)) < 500


# ------------------------------------------------------------------------------------- prompt sets
@SETTINGS
@example(doc={"normal\ud800": ["a fundus"]})
@example(doc={"normal": ["a \udcff fundus"]})
@given(doc=json_values)
def test_any_json_document_is_a_prompt_set_or_one_line_error(doc):
    text = json.dumps(doc)
    try:
        ps = PromptSet.from_json_text(text)
    except VisionCLIPError as e:
        assert one_line(e)
        return
    assert PromptSet.from_json_text(ps.to_json()) == ps  # what was accepted survives a round trip


@SETTINGS
@given(text=st.text(any_char, max_size=200))
def test_any_text_is_a_prompt_set_or_one_line_error(text):
    try:
        PromptSet.from_json_text(text)
    except VisionCLIPError as e:
        assert one_line(e)


names = st.text(any_char, min_size=1, max_size=30)
prompts = st.lists(st.text(any_char, min_size=1, max_size=80), min_size=1, max_size=4)


@SETTINGS
@given(classes=st.dictionaries(names, prompts | st.dictionaries(names, prompts, min_size=1, max_size=3),
                               min_size=1, max_size=6))
def test_prompt_set_round_trip_keeps_every_class_and_prompt(classes, tmp_path_factory):
    try:
        ps = PromptSet(classes)
    except VisionCLIPError as e:
        assert one_line(e)
        return
    path = ps.save(tmp_path_factory.mktemp("ps") / "set.json")
    again = PromptSet.from_json(path)
    assert again == ps
    norm = lambda s: " ".join(s.split())  # noqa: E731  names and prompts are whitespace-normalised, nothing else
    assert again.classes == [norm(c) for c in classes]
    for raw, value in classes.items():
        flat = value if isinstance(value, list) else [p for v in value.values() for p in v]
        assert again[norm(raw)] == [norm(p) for p in flat]


# ------------------------------------------------------------------------------------- labels.csv
@SETTINGS
@given(content=st.text(any_char, max_size=300))
def test_any_labels_csv_is_rows_or_one_line_error(content, tmp_path_factory):
    d = tmp_path_factory.mktemp("labels")
    (d / "labels.csv").write_bytes(content.encode("utf-8", "surrogatepass"))
    try:
        items = read_labels(d)
    except VisionCLIPError as e:
        assert one_line(e)
        return
    assert all(p.is_file() and label for p, label in items)


label_text = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=60).filter(lambda s: s.strip())


@SETTINGS
@given(labels=st.lists(label_text, min_size=1, max_size=8))
def test_labels_csv_round_trip(labels, tmp_path_factory):
    d = tmp_path_factory.mktemp("labels")
    with open(d / "labels.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label"])
        for i, label in enumerate(labels):
            (d / f"{i}.png").write_bytes(b"x")
            w.writerow([f"{i}.png", label])
    items = read_labels(d)
    assert [label for _, label in items] == [label.strip() for label in labels]
    assert [p.name for p, _ in items] == [f"{i}.png" for i in range(len(labels))]


# ------------------------------------------------------------------------------------- case store
@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return CaseStore(tmp_path_factory.mktemp("store") / "cases.db")


big_text = st.text(any_char, max_size=50) | st.builds(lambda c, n: c * n, any_char, st.integers(1, 100_000))


@SETTINGS
@given(reviewer=big_text, notes=big_text, labels=st.lists(big_text, max_size=4), patient=big_text)
@example(reviewer="dr \ud800", notes="ok", labels=[], patient="")
@example(reviewer="dr a", notes="lone \udcff surrogate", labels=["\ud800"], patient="\x00\x1b[31m")
@example(reviewer="dr a", notes="x" * 100_000, labels=["y" * 100_000], patient="p" * 100_000)
def test_case_store_keeps_any_text_or_refuses_it_in_one_line(store, reviewer, notes, labels, patient):
    rec = CaseRecord.of(reviewer=reviewer, verdict="disagree", image_sha256="ab" * 32, thumbnail=b"",
                     prompt_set_json="{}", prompt_set_sha256="p", probabilities={"a": 1.0}, model_id="m",
                     predicted_label="a", corrected_labels=labels, notes=notes, store_identifiers=True,
                     patient_id=patient)
    try:
        case_id = store.log_case(rec)
    except StoreError as e:
        assert one_line(e)
        return
    case = store.get_case(case_id)
    assert case["reviewer"] == " ".join(reviewer.split())
    assert case["notes"] == notes
    assert json.loads(case["corrected_labels"]) == list(parse_labels(labels))  # the store's one normalisation
    assert case["patient_id"] == (" ".join(patient.split()) or None)
    assert case["history"][0]["notes"] == notes
    rev = store.add_revision(case_id, Review(reviewer=reviewer, verdict="agree", notes=notes[::-1]))
    assert store.history(case_id)[rev - 1]["notes"] == notes[::-1]


@SETTINGS
@example(reviewer="dr a", notes="\ud800", labels="", verdict="agree")
@given(reviewer=big_text, notes=big_text, labels=big_text, verdict=st.sampled_from(["agree", "disagree", "x", ""]))
def test_save_review_handler_answers_any_form_in_one_line(tmp_path_factory, reviewer, notes, labels, verdict):
    from visionclip_app import handlers as h

    d = tmp_path_factory.mktemp("h")
    ctx = h.AppContext.create(None, CaseStore(d / "c.db"), d / "w")  # saving needs no model
    state = {"image_sha256": "ab" * 32, "thumbnail": b"", "prompt_set_json": "{}", "prompt_set_sha256": "p",
             "probabilities": {"normal": 1.0}, "model_id": "m", "predicted_label": "normal"}
    status, case_id = h.save_review(ctx, state, reviewer, verdict, labels, None, notes)
    assert "\n" not in status
    if case_id is None:
        assert status.startswith(h.STATUS_ERROR) and ctx.store.count() == 0
    else:
        assert ctx.store.get_case(case_id)["notes"] == notes
