"""The Analyse tab: probabilities, saliency, quality screen, and one-line errors for bad input."""
from __future__ import annotations

import io

import pandas as pd
import pytest
from PIL import Image

from visionclip_app import handlers as h
from visionclip_app.store import CaseStore

from .support import is_error, render_to, small_table

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_analyse_returns_probabilities_overlay_and_state(ctx, analysed):
    status, probs, original, overlay, quality_md, dd, state = analysed
    assert set(probs) == {"normal", "glaucoma", "diabetic retinopathy"}
    assert abs(sum(probs.values()) - 1) < 1e-4
    assert probs == pytest.approx(ctx.model.classify([original], state.prompt_set)[0], abs=1e-5)
    assert isinstance(original, Image.Image)
    assert isinstance(overlay, Image.Image) and overlay.size == original.size
    predicted = max(probs, key=probs.get)
    assert dd["choices"] == list(probs) and dd["value"] == predicted
    a = state.analysis
    assert a.predicted_label == predicted and a.probabilities == probs and len(a.image_sha256) == 64
    assert a.saliency_method == "gradcam" and a.saliency_class == predicted
    assert state.quality["gradable"] is True and quality_md == h.QUALITY_OK_MD
    assert ("Screening: **NORMAL**" if predicted == "normal" else f"most probable condition **{predicted}**") in status
    assert "top-1: no threshold" in status  # a three-class table has no calibrated screening rule
    assert "Map points at: " in status  # where the overlay's hot spot lies, in words


def test_the_default_preset_in_the_table_screens_with_its_calibrated_threshold(ctx, fundus_path):
    from engine import load_preset

    preset = load_preset("screening")
    table = h.table_from_prompt_set(preset)
    table.iloc[0, 1] = "an edited normal prompt"  # edited prompts keep the rule
    ps = h.prompt_set_from_table(table)
    assert ps.screening == preset.screening
    status, probs, *_, state = h.analyse(ctx, fundus_path, table, "gradcam", 0.5, None)
    assert "fixed on healthy synthetic renders" in status and "P(abnormal)" in status
    assert state.analysis.predicted_label == "normal" or "most probable condition" in status
    fewer = h.prompt_set_from_table(table[table.iloc[:, 0] != "glaucoma"])
    assert fewer.screening is None  # not the default set any more: top-1


def test_screening_headline_leads_with_the_decision():
    import numpy as np
    from engine.screening import Screening

    probs = {"normal": 0.2, "glaucoma": 0.7, "cataract": 0.1}
    normal = Screening(np.array([0.04]), np.array([False]), 0.055, "normal")
    assert h.screening_headline(normal, "normal", probs).startswith("Screening: **NORMAL** (P(abnormal) 4.0%; threshold 5.5%")
    finding = Screening(np.array([0.9]), np.array([True]), None, "normal")
    line = h.screening_headline(finding, "glaucoma", probs)
    assert "**FINDING**" in line and "most probable condition **glaucoma** (70.0%)" in line and "top-1" in line


def test_reanalyse_after_prompt_edit_reencodes_only_the_new_prompt(ctx, fundus_path, analysed):
    before = ctx.model.text_encodings
    t = small_table()
    t.iloc[0, 1] = "a completely normal retina photograph"
    out = h.analyse(ctx, fundus_path, t, "gradcam", 0.5, None)
    assert out[0].startswith(h.STATUS_OK)
    assert ctx.model.text_encodings - before == 1


def test_saliency_class_follows_the_image(ctx, fundus_path, tmp_path):
    """A prompt edit on the same image keeps the reviewer's class; a new image starts from its own prediction."""
    other_path = render_to(tmp_path / "other.png", seed=11, conditions=["glaucoma"])
    first = h.analyse(ctx, fundus_path, small_table(), "gradcam", 0.5, None)[-1]
    other_pred = ctx.model.classify([other_path], first.prompt_set)[0]
    other_pred = max(other_pred, key=other_pred.get)
    chosen = next(c for c in first.probabilities if c not in (first.analysis.predicted_label, other_pred))
    _, _, state = h.update_saliency(ctx, first, chosen, "gradcam", 0.5)
    assert state.analysis.saliency_class == chosen

    edited = small_table()
    edited.iloc[1, 1] = "glaucomatous optic disc"
    out = h.analyse(ctx, fundus_path, edited, "gradcam", 0.5, chosen, previous=state)
    assert out[-1].analysis.saliency_class == chosen and out[5]["value"] == chosen

    out = h.analyse(ctx, other_path, edited, "gradcam", 0.5, chosen, previous=out[-1])
    assert out[-1].analysis.saliency_class == other_pred == out[-1].analysis.predicted_label
    assert out[5]["value"] == other_pred


def test_saliency_target_similarity_or_softmax_and_bad_target(ctx, analysed, fundus_path):
    state = analysed[-1]
    assert state.analysis.saliency_target == "softmax"  # default: why this class rather than the others
    cls = state.analysis.saliency_class
    overlay, status, state2 = h.update_saliency(ctx, state, cls, "gradcam", 0.5, "similarity")
    assert status.startswith(h.STATUS_OK) and state2.analysis.saliency_target == "similarity"
    assert state2.analysis.saliency_thumbnail != state.analysis.saliency_thumbnail  # another score, another map
    assert is_error(h.update_saliency(ctx, state, "glaucoma", "gradcam", 0.5, "logits")[1])
    out = h.analyse(ctx, fundus_path, small_table(), "gradcam", 0.5, None, "logits")
    assert is_error(out[0]) and "saliency target" in out[0] and out[-1] is None


def test_update_saliency(ctx, analysed):
    state = analysed[-1]
    overlay, status, state2 = h.update_saliency(ctx, state, "glaucoma", "gradcam++", 0.3)
    assert status.startswith(h.STATUS_OK) and isinstance(overlay, Image.Image)
    assert state2.analysis.saliency_class == "glaucoma" and state2.analysis.saliency_method == "gradcam++"
    assert state.analysis.saliency_method == "gradcam"  # the previous state is not modified
    assert is_error(h.update_saliency(ctx, None, "glaucoma", "gradcam", 0.5)[1])
    assert is_error(h.update_saliency(ctx, state, "nope", "gradcam", 0.5)[1])
    assert is_error(h.update_saliency(ctx, state, "glaucoma", "bogus", 0.5)[1])
    assert is_error(h.update_saliency(ctx, state, "glaucoma", "gradcam", 7)[1])


def test_lesion_level_detail(ctx, analysed, fundus_path):
    state = analysed[-1]
    method = h.method_for_detail(True, "gradcam")
    assert method == "gradcam-elementwise" and h.method_for_detail(True, "hirescam") == "hirescam"
    assert h.method_for_detail(False, method) == h.saliency_methods()[0] == "multiscale" and h.method_for_detail(False, "layercam") == "layercam"
    overlay, status, state2 = h.update_saliency(ctx, state, "glaucoma", method, 0.5, "softmax", True)
    assert status.startswith(h.STATUS_OK) and isinstance(overlay, Image.Image)
    assert state2.analysis.saliency_method == "gradcam-elementwise (detail)"
    out = h.analyse(ctx, fundus_path, small_table(), method, 0.5, None, "softmax", True)
    assert out[0].startswith(h.STATUS_OK) and out[-1].analysis.saliency_method == "gradcam-elementwise (detail)"
    # a wrong form value is a one-line error that keeps the current analysis
    overlay, status, kept = h.update_saliency(ctx, state, "glaucoma", method, 0.5, "softmax", "yes please")
    assert is_error(status) and "detail" in status and kept is state
    out = h.analyse(ctx, fundus_path, small_table(), method, 0.5, None, "softmax", 3)
    assert is_error(out[0]) and out[-1] is None


def test_analyse_with_subclasses_shows_what_the_predicted_class_is_made_of(ctx, fundus_path):
    subclasses = {"healthy": ["normal", "no disease"], "vascular": ["diabetic retinopathy", "hypertensive retinopathy"]}
    table = pd.DataFrame([[f"{c} > {sub}", f"a fundus photograph showing {sub}"] for c, subs in subclasses.items()
                          for sub in subs], columns=h.PROMPT_COLUMNS)
    status, probs, *_, state = h.analyse(ctx, fundus_path, table, "gradcam", 0.5, "vascular")
    assert status.startswith(h.STATUS_OK) and set(probs) == set(subclasses)
    assert probs == pytest.approx(ctx.model.classify([state.image], state.prompt_set)[0], abs=1e-5)
    assert state.analysis.saliency_class == "vascular"
    predicted = state.analysis.predicted_label
    breakdown = status.split(f"{predicted} is the sum of: ")[1]
    assert all(sub in breakdown for sub in subclasses[predicted])
    assert "is the sum of" not in h.analyse(ctx, fundus_path, small_table(), "gradcam", 0.5, None)[0]


def _bad_files(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello, not an image")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    buf = io.BytesIO()
    Image.new("RGB", (300, 300), (200, 100, 50)).save(buf, format="PNG")
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return [(str(text), "Not a usable image"), (str(empty), "empty"), (str(corrupt), "Not a usable image"),
            (str(tmp_path / "missing.png"), "could not be read"), (None, "Upload a fundus photograph")]


def test_analyse_bad_uploads(ctx, tmp_path):
    for path, msg in _bad_files(tmp_path):
        out = h.analyse(ctx, path, small_table(), "gradcam", 0.5, None)
        assert is_error(out[0]) and msg in out[0], (path, out[0])
        assert out[-1] is None
    assert ctx.store.count() == 0


def test_analyse_upload_size_limit(model, tmp_path, fundus_path):
    c = h.AppContext.create(model, CaseStore(tmp_path / "c.db"), tmp_path / "w", max_upload_mb=0.001)
    out = h.analyse(c, fundus_path, small_table(), "gradcam", 0.5, None)
    assert is_error(out[0]) and "limit" in out[0]


@pytest.mark.parametrize("table, method, opacity, msg", [
    (pd.DataFrame([], columns=h.PROMPT_COLUMNS), "gradcam", 0.5, "empty"),
    (pd.DataFrame([["a", "x"], ["A", "y"]], columns=h.PROMPT_COLUMNS), "gradcam", 0.5, "Duplicate"),
    (pd.DataFrame([["a", "x" * 10_000], ["b", "y"]], columns=h.PROMPT_COLUMNS), "gradcam", 0.5, "limit"),
    (None, "gradcam", 0.5, "empty"),
    ("small", "nonsense", 0.5, "method"),
    ("small", "gradcam", 3.0, "Opacity"),
    ("small", "gradcam", "abc", "Opacity must be a number"),
])
def test_analyse_bad_form_values(ctx, fundus_path, table, method, opacity, msg):
    table = small_table() if isinstance(table, str) else table
    out = h.analyse(ctx, fundus_path, table, method, opacity, None)
    assert is_error(out[0]) and msg in out[0] and out[-1] is None


def test_ungradable_warning_lists_the_screen_reasons(ctx, tmp_path):
    p = tmp_path / "dark.png"
    Image.new("RGB", (256, 256), (3, 3, 3)).save(p)
    status, *_, quality_md, _, state = h.analyse(ctx, str(p), small_table(), "gradcam", 0.5, None)
    assert status.startswith(h.STATUS_OK) and "looks ungradable" in status
    assert state.quality["gradable"] is False and state.quality["reasons"]
    assert quality_md != h.QUALITY_OK_MD and all(r in quality_md for r in state.quality["reasons"])


def test_summary_names_the_current_analysis(analysed):
    state = analysed[-1]
    md = h.summary_markdown(state)
    assert state.analysis.predicted_label in md and state.analysis.image_sha256[:12] in md
    assert "No analysis yet" in h.summary_markdown(None)


def test_concurrent_sessions_analyse_and_log(ctx, fundus_path):
    """Several sessions at once (as gradio's worker threads would run them): all succeed, all are logged."""
    from concurrent.futures import ThreadPoolExecutor

    def session(k):
        out = h.analyse(ctx, fundus_path, small_table(), "gradcam", 0.5, None)
        assert out[0].startswith(h.STATUS_OK), out[0]
        return h.save_review(ctx, out[-1], f"reviewer {k}", "agree", [], 0.5, "")[1]

    with ThreadPoolExecutor(4) as pool:
        ids = list(pool.map(session, range(4)))
    assert all(ids) and ctx.store.count() == 4


def test_the_decision_box_leads_with_normal_or_finding_and_is_empty_without_a_decision(ctx, fundus_path):
    from engine import load_preset

    *_, state = h.analyse(ctx, fundus_path, h.table_from_prompt_set(load_preset("screening")), "gradcam", 0.5, None)
    box = h.decision_markdown(state)
    assert box.startswith("#### **NORMAL**") or box.startswith("#### **FINDING**")
    assert "P(abnormal)" in box
    assert h.decision_markdown(None) == ""
    no_normal = pd.DataFrame([["glaucoma", "a large cup"], ["cataract", "a hazy view"]], columns=h.PROMPT_COLUMNS)
    *_, state = h.analyse(ctx, fundus_path, no_normal, "gradcam", 0.5, None)
    assert h.decision_markdown(state) == ""


def test_where_line_is_shortened_or_left_out_rather_than_cut():
    from engine.saliency import MapLocation
    from visionclip_app.handlers.analyse import STATUS_CHARS, _with_where

    where = MapLocation("macula, temporal to the fovea", 0.4, (10, 10), "left", False)
    assert _with_where(["Predicted."], where)[-1] == where.text  # room: the full line with its eye-side note
    long_notes = ["x" * (STATUS_CHARS - len(where.short) - 1)]
    assert _with_where(long_notes, where) == [*long_notes, where.short]
    assert _with_where(["x" * STATUS_CHARS], where) == ["x" * STATUS_CHARS]
    assert _with_where(["Predicted."], None) == ["Predicted."]
