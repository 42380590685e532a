"""The Cases tab: search, open, append a correction, export."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from PIL import Image

from visionclip_app import handlers as h

from .support import is_error

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture
def two_cases(ctx, analysed):
    state = analysed[-1]
    other = next(c for c in state.probabilities if c != state.analysis.predicted_label)
    _, a = h.save_review(ctx, state, "Ann", "agree", [], 0.9, "first")
    _, b = h.save_review(ctx, state, "Bob", "disagree", [other], 0.6, "second")
    return a, b, other


def test_search_filters_and_agreement(ctx, two_cases):
    a, b, other = two_cases
    df, md, fig, status = h.search_cases(ctx)
    assert status == f"{h.STATUS_OK} 2 case(s) found." and list(df["id"]) == [b, a]
    assert "agreement **50.0%** over 2 graded case(s)" in md and fig is not None
    assert list(h.search_cases(ctx, reviewer="bob")[0]["id"]) == [b]
    assert list(h.search_cases(ctx, verdict="agree")[0]["id"]) == [a]
    assert list(h.search_cases(ctx, label=other)[0]["id"]) == [b]
    assert list(h.search_cases(ctx, text="FIRST")[0]["id"]) == [a]
    assert h.search_cases(ctx, date_to="2000-01-01")[0].empty
    for bad, msg in [(dict(date_from="yesterday"), "From date"), (dict(date_from="2030-01-02", date_to="2030-01-01"),
                     "after the 'to' date"), (dict(verdict="sure"), "verdict")]:
        st = h.search_cases(ctx, **bad)[-1]
        assert is_error(st) and msg in st


def test_open_case_and_append_correction(ctx, two_cases):
    a, b, other = two_cases
    thumb, sal, md, hist, status = h.open_case(ctx, b)
    assert isinstance(thumb, Image.Image) and isinstance(sal, Image.Image)
    assert f"Case #{b}" in md and f"corrected: {other}" in md and len(hist) == 1
    assert "No case #9999" in h.open_case(ctx, 9999)[-1] and is_error(h.open_case(ctx, None)[-1])
    df_all = h.search_cases(ctx)[0]
    assert h.case_id_from_selection(df_all, [1, 3]) == a and h.case_id_from_selection(df_all, [7, 0]) is None

    st = h.add_correction(ctx, b, "Cy", "agree", "", 0.8, "on reflection fine")
    assert st == f"{h.STATUS_OK} Case #{b}: revision 2 appended."
    assert ctx.store.get_case(b)["verdict"] == "agree" and ctx.store.get_case(b)["reviewer"] == "Cy"
    for args, msg in [((b, "Cy", "disagree", "", 0.8, ""), "corrected label"), ((None, "Cy", "agree", "", 0.8, ""),
                      "Open a case"), ((9999, "Cy", "agree", "", 0.8, ""), "No case with id 9999")]:
        st = h.add_correction(ctx, *args)
        assert is_error(st) and msg in st
    assert len(ctx.store.history(b)) == 2


def test_export_csv_and_json(ctx, two_cases):
    a, b, _ = two_cases
    path, status = h.export_cases(ctx, "csv")
    rows = list(csv.DictReader(open(path, encoding="utf-8")))
    assert status == f"{h.STATUS_OK} Exported 2 case(s) as CSV."
    assert [int(r["id"]) for r in rows] == [b, a] and [r["reviewer"] for r in rows] == ["Bob", "Ann"]
    assert Path(path).name.startswith("visionclip_") and Path(path).parent.parent == ctx.work_dir
    path, _ = h.export_cases(ctx, "json", reviewer="Ann")
    doc = json.loads(Path(path).read_text())
    assert [c["id"] for c in doc["cases"]] == [a]
    assert "csv or json" in h.export_cases(ctx, "xlsx")[1]
