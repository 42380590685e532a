"""The Review and log tab: a verdict on the current analysis, saved to the case log."""
from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from .. import handlers as h
from ..store import MAX_NOTES_CHARS, VERDICTS


def layout() -> SimpleNamespace:
    """Lays out the tab; returns its components by name."""
    with gr.Tab("Review and log", id="review"):
        gr.Markdown("Review the current analysis and log it. Only the image hash and a metadata-free "
                    "thumbnail are stored; the file name and a patient identifier are stored **only** "
                    "if you tick the box.")
        review_summary = gr.Markdown("_No analysis yet: analyse an image first._", label="current analysis",
                                     elem_id="review-summary")
        with gr.Row():
            reviewer = gr.Textbox(label="Reviewer", max_lines=1, elem_id="reviewer")
            verdict = gr.Radio(list(VERDICTS), label="Verdict", value="agree", elem_id="verdict")
            confidence = gr.Slider(0.0, 1.0, value=0.8, step=0.05, label="Reviewer confidence")
        corrected = gr.Dropdown([], multiselect=True, allow_custom_value=True,
                                label="Corrected label(s) (required when you disagree)",
                                elem_id="corrected")
        notes = gr.Textbox(label="Notes", lines=3, max_length=MAX_NOTES_CHARS)
        with gr.Row():
            opt_in = gr.Checkbox(label="Also store the original file name and patient identifier "
                                       "(opt-in)", value=False)
            patient_id = gr.Textbox(label="Patient identifier (stored only with opt-in)", max_lines=1)
        save_btn = gr.Button("Save review", variant="primary", elem_id="save-review")
        review_status = gr.Markdown("", label="review status", elem_id="review-status",
                                    elem_classes=["status-line"])
        saved_case_id = gr.Number(None, label="Saved case id", visible=False, precision=0)
    return SimpleNamespace(review_summary=review_summary, reviewer=reviewer, verdict=verdict,
                           confidence=confidence, corrected=corrected, notes=notes, opt_in=opt_in,
                           patient_id=patient_id, save_btn=save_btn, review_status=review_status,
                           saved_case_id=saved_case_id)


def wire(ctx: h.AppContext, tab: SimpleNamespace, analysis: gr.State) -> None:
    """The review's save event (the scripting API's /save_review)."""
    def do_save_review(state, reviewer, verdict, corrected_labels, confidence, notes, opt_in, patient_id):
        return h.save_review(ctx, state, reviewer, verdict, corrected_labels, confidence, notes, opt_in, patient_id)

    tab.save_btn.click(do_save_review, [analysis, tab.reviewer, tab.verdict, tab.corrected, tab.confidence, tab.notes,
                                        tab.opt_in, tab.patient_id],
                       [tab.review_status, tab.saved_case_id], api_name="save_review",
                       api_description="Log this session's analysis with a review; returns (status, case id).")
