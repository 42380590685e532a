"""The Review tab: a review is logged with its analysis; bad values are one-line errors that log nothing."""
from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from visionclip_app import handlers as h

from .support import is_error

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_save_review_logs_everything_but_identifiers(ctx, analysed):
    state = analysed[-1]
    status, cid = h.save_review(ctx, state, "Dr Who", "disagree", ["glaucoma"], 0.7, "cup looks big",
                                opt_in=False, patient_id="P-42")
    assert status == f"{h.STATUS_OK} Saved case #{cid} (disagree)."
    case = ctx.store.get_case(cid)
    a = state.analysis
    assert case["reviewer"] == "Dr Who" and case["verdict"] == "disagree" and case["confidence"] == 0.7
    assert json.loads(case["corrected_labels"]) == ["glaucoma"] and case["notes"] == "cup looks big"
    assert case["original_filename"] is None and case["patient_id"] is None
    assert case["image_sha256"] == a.image_sha256
    assert json.loads(case["probabilities"]) == pytest.approx(a.probabilities)
    assert case["prompt_set_sha256"] == a.prompt_set_sha256 == state.prompt_set.sha256
    assert json.loads(case["prompt_set_json"])["glaucoma"] == ["glaucoma", "large optic cup"]
    assert case["model_id"] == ctx.model.model_id and case["predicted_label"] == a.predicted_label
    assert (case["saliency_method"], case["saliency_class"], case["saliency_target"]) == (
        a.saliency_method, a.saliency_class, a.saliency_target)
    thumb = Image.open(io.BytesIO(case["thumbnail"]))
    assert max(thumb.size) <= 256 and not thumb.getexif() and b"Jane" not in case["thumbnail"]
    assert case["saliency_thumbnail"] == a.saliency_thumbnail


def test_save_review_opt_in_stores_file_name_only_not_path(ctx, analysed):
    status, cid = h.save_review(ctx, analysed[-1], "Dr Who", "agree", [], 0.9, "", opt_in=True, patient_id="P-42")
    case = ctx.store.get_case(cid)
    assert case["original_filename"] == "patient_Jane_Doe_123.png" and case["patient_id"] == "P-42"


@pytest.mark.parametrize("state_ok, reviewer, verdict, labels, conf, notes, msg", [
    (False, "Dr", "agree", [], 0.5, "", "analyse an image"),
    (True, "  ", "agree", [], 0.5, "", "reviewer"),
    (True, "Dr", "perhaps", [], 0.5, "", "verdict"),
    (True, "Dr", None, [], 0.5, "", "verdict"),
    (True, "Dr", "disagree", [], 0.5, "", "corrected label"),
    (True, "Dr", "disagree", " , ", 0.5, "", "corrected label"),
    (True, "Dr", "agree", ["x" * 300], 0.5, "", "label is too long"),
    (True, "Dr", "agree", [], 1.7, "", "Confidence"),
    (True, "Dr", "agree", [], "high", "", "Confidence"),
    (True, "Dr", "agree", [], float("nan"), "", "Confidence"),
    (True, "Dr", "agree", [], 0.5, "x" * 6000, "Notes"),
    (True, "D" * 150, "agree", [], 0.5, "", "too long"),
])
def test_save_review_rejects_bad_values(ctx, analysed, state_ok, reviewer, verdict, labels, conf, notes, msg):
    status, cid = h.save_review(ctx, analysed[-1] if state_ok else None, reviewer, verdict, labels, conf, notes)
    assert is_error(status) and msg.lower() in status.lower() and cid is None
    assert ctx.store.count() == 0
