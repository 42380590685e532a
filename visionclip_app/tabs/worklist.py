"""The Worklist tab: read a folder or a set of uploads one image at a time, from the keyboard."""
from __future__ import annotations

import functools
from types import SimpleNamespace

import gradio as gr

from .. import handlers as h
from ..store import ITEM_STATES
from .common import PRIVATE, progress_callback

# Worklist keys: only while the Worklist tab is shown and no text field has the focus.
KEYBOARD_JS = """
() => {
  const keys = {a: "wl-agree", d: "wl-disagree", u: "wl-ungradable", n: "wl-next", arrowright: "wl-next",
                p: "wl-prev", arrowleft: "wl-prev", j: "wl-next-unreviewed", s: "wl-skip"};
  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const t = e.target;
    if (t && (t.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(t.tagName))) return;
    const id = keys[e.key.toLowerCase()];
    const button = id && document.getElementById(id);
    if (!button || button.offsetParent === null) return;  // not on the Worklist tab
    e.preventDefault();
    button.click();
  });
}
"""


def layout(ctx: h.AppContext) -> SimpleNamespace:
    """Lays out the tab; returns its components by name."""
    wl = h.worklist
    with gr.Tab("Worklist", id="worklist"):
        gr.Markdown("Review a folder (under the app's `--data-root`) or a set of uploads one image at a time. "
                    "Keys (outside text fields): **A** agree · **D** disagree · **U** ungradable · "
                    "**N** / **→** next · **P** / **←** previous · **J** next unreviewed · **S** skip. "
                    "With double reading, each reader reads blind to the other's verdict.")
        with gr.Row():
            wl_select = gr.Dropdown(wl.worklist_choices(ctx), value=None, label="Worklist",
                                    elem_id="wl-select", scale=2)
            wl_reviewer = gr.Textbox(label="Reviewer", max_lines=1, elem_id="wl-reviewer", scale=1)
            wl_open_btn = gr.Button("Open / resume", variant="primary", elem_id="wl-open", scale=1)
        with gr.Accordion("New worklist", open=False):
            with gr.Row():
                wl_name = gr.Textbox(label="Name", max_lines=1, elem_id="wl-name")
                wl_folder = gr.Textbox(label="Folder under the data root", max_lines=1, elem_id="wl-folder")
                wl_recursive = gr.Checkbox(False, label="Include subfolders")
                wl_readings = gr.Radio([("single reading", 1), ("double reading", 2)], value=1,
                                       label="Readings per image", elem_id="wl-readings")
            wl_files = gr.File(file_count="multiple", type="filepath", label="... or upload images",
                               elem_id="wl-files", height=90)
            wl_create_btn = gr.Button("Create worklist", elem_id="wl-create")
        wl_status = gr.Markdown("", elem_id="wl-status", elem_classes=["status-line"])
        wl_progress = gr.Markdown("", elem_id="wl-progress")
        wl_item = gr.Markdown("", elem_id="wl-item")
        with gr.Row():
            wl_prev = gr.Button("← Previous (P)", size="sm", elem_id="wl-prev")
            wl_next = gr.Button("Next (N) →", size="sm", elem_id="wl-next")
            wl_next_open = gr.Button("Next unreviewed (J)", size="sm", elem_id="wl-next-unreviewed")
            wl_skip = gr.Button("Skip (S)", size="sm", elem_id="wl-skip")
        with gr.Row():
            wl_overlay = gr.Image(label="Photograph and saliency", type="pil", interactive=False, height=380,
                                  format="jpeg", elem_id="wl-overlay")
            with gr.Column():
                wl_probs = gr.Label(label="Probabilities", elem_id="wl-probs")
                wl_corrected = gr.Dropdown([], multiselect=True, allow_custom_value=True,
                                           label="Corrected label(s) (for disagree)", elem_id="wl-corrected")
                with gr.Row():
                    wl_agree = gr.Button("Agree (A)", variant="primary", elem_id="wl-agree")
                    wl_disagree = gr.Button("Disagree (D)", elem_id="wl-disagree")
                    wl_ungradable = gr.Button("Ungradable (U)", elem_id="wl-ungradable")
        with gr.Accordion("Batch analysis, results and export", open=False):
            with gr.Row():
                wl_batch_btn = gr.Button("Analyse all pending images", elem_id="wl-batch")
                wl_filter_pred = gr.Dropdown([wl.ANY], value=wl.ANY, label="Predicted",
                                             elem_id="wl-filter-pred")
                wl_filter_state = gr.Dropdown([wl.ANY, *ITEM_STATES], value=wl.ANY,
                                              label="State", elem_id="wl-filter-state")
                wl_table_btn = gr.Button("Show results", elem_id="wl-table-btn")
            wl_table = gr.Dataframe(headers=wl.RESULT_COLUMNS, interactive=False, max_height=320,
                                    label="Results (click a column to sort)", elem_id="wl-table")
            with gr.Row():
                wl_export_fmt = gr.Radio(list(h.EXPORT_FORMATS), value="csv", label="Export format",
                                         elem_id="wl-export-format")
                wl_export_btn = gr.Button("Export readings", elem_id="wl-export")
            wl_export_file = gr.File(label="Worklist export", interactive=False, elem_id="wl-export-file")
        wl_pos = gr.State(0)
        wl_analysis = gr.State(None)
    return SimpleNamespace(wl_select=wl_select, wl_reviewer=wl_reviewer, wl_open_btn=wl_open_btn, wl_name=wl_name,
                           wl_folder=wl_folder, wl_recursive=wl_recursive, wl_readings=wl_readings,
                           wl_files=wl_files, wl_create_btn=wl_create_btn, wl_status=wl_status,
                           wl_progress=wl_progress, wl_item=wl_item, wl_prev=wl_prev, wl_next=wl_next,
                           wl_next_open=wl_next_open, wl_skip=wl_skip, wl_overlay=wl_overlay, wl_probs=wl_probs,
                           wl_corrected=wl_corrected, wl_agree=wl_agree, wl_disagree=wl_disagree,
                           wl_ungradable=wl_ungradable, wl_batch_btn=wl_batch_btn,
                           wl_filter_pred=wl_filter_pred, wl_filter_state=wl_filter_state,
                           wl_table_btn=wl_table_btn, wl_table=wl_table, wl_export_fmt=wl_export_fmt,
                           wl_export_btn=wl_export_btn, wl_export_file=wl_export_file, wl_pos=wl_pos,
                           wl_analysis=wl_analysis)


def wire(ctx: h.AppContext, tab: SimpleNamespace, analysis_settings: list) -> None:
    """The tab's events; ``analysis_settings`` are the Analyse tab's prompt table, method, opacity and target
    components, which every worklist analysis uses."""
    wl = h.worklist
    wl_view = [tab.wl_status, tab.wl_probs, tab.wl_overlay, tab.wl_item, tab.wl_progress, tab.wl_pos, tab.wl_analysis,
               tab.wl_corrected]

    def show_item(wid, pos, table, method, opacity, target, previous):
        out = wl.open_item(ctx, wid, pos, table, method, opacity, target, previous)
        state = out[-1]
        return (*out, gr.update(choices=list(state.probabilities) if state else [], value=[]))

    def do_create(name, folder, files, readings, recursive):
        return wl.create_worklist(ctx, name, folder, files, readings, recursive)

    tab.wl_create_btn.click(do_create, [tab.wl_name, tab.wl_folder, tab.wl_files, tab.wl_readings, tab.wl_recursive],
                            [tab.wl_select, tab.wl_status], **PRIVATE)

    def do_open(wid, reviewer_name, table, method, opacity, target, previous):
        if wid is None:
            return (h.error_status("Choose a worklist first."), *[gr.update()] * (len(wl_view) - 1))
        return show_item(wid, wl.start_position(ctx, wid, reviewer_name), table, method, opacity, target, previous)

    tab.wl_open_btn.click(do_open, [tab.wl_select, tab.wl_reviewer, *analysis_settings, tab.wl_analysis], wl_view,
                          **PRIVATE)

    def mover(move):
        def do_move(wid, pos, reviewer_name, table, method, opacity, target, previous):
            try:
                new = wl.step(ctx, wid, pos, move, reviewer_name)
            except h.UserError as e:
                return (h.error_status(e), *[gr.update()] * (len(wl_view) - 1))
            return show_item(wid, new, table, method, opacity, target, previous)
        return do_move

    move_inputs = [tab.wl_select, tab.wl_pos, tab.wl_reviewer, *analysis_settings, tab.wl_analysis]
    for btn, move in ((tab.wl_prev, "previous"), (tab.wl_next, "next"), (tab.wl_next_open, "next unreviewed")):
        btn.click(mover(move), move_inputs, wl_view, concurrency_limit=2, **PRIVATE)

    def do_skip(wid, pos, reviewer_name, table, method, opacity, target, previous):
        status_line, progress = wl.skip_item(ctx, wid, pos)
        if status_line.startswith(h.STATUS_ERROR):
            return (status_line, *[gr.update()] * (len(wl_view) - 1))
        return mover("next unreviewed")(wid, pos, reviewer_name, table, method, opacity, target, previous)

    tab.wl_skip.click(do_skip, move_inputs, wl_view, concurrency_limit=2, **PRIVATE)

    def reader(verdict_value):
        def do_read(wid, pos, reviewer_name, table, method, opacity, target, previous, labels):
            status_line, progress = wl.save_reading(ctx, wid, pos, previous, reviewer_name, verdict_value, labels)
            if status_line.startswith(h.STATUS_ERROR):
                return (status_line, *[gr.update()] * (len(wl_view) - 1))
            nxt = wl.step(ctx, wid, pos, "next unreviewed", reviewer_name)
            out = show_item(wid, nxt, table, method, opacity, target, previous)
            return (status_line + (" " + out[0] if nxt != pos else " All images read."), *out[1:])
        return do_read

    verdict_buttons = ((tab.wl_agree, "agree"), (tab.wl_disagree, "disagree"), (tab.wl_ungradable, "ungradable"))
    for btn, verdict_value in verdict_buttons:
        btn.click(reader(verdict_value), [*move_inputs, tab.wl_corrected], wl_view, concurrency_limit=2, **PRIVATE)

    def do_batch(wid, table, progress=gr.Progress()):
        return wl.analyse_worklist(ctx, wid, table, progress=progress_callback(progress))

    tab.wl_batch_btn.click(do_batch, [tab.wl_select, analysis_settings[0]], [tab.wl_status],
                           concurrency_limit=1, **PRIVATE)
    tab.wl_table_btn.click(functools.partial(wl.results_table, ctx),
                           [tab.wl_select, tab.wl_filter_pred, tab.wl_filter_state],
                           [tab.wl_table, tab.wl_filter_pred, tab.wl_status], **PRIVATE)
    tab.wl_export_btn.click(functools.partial(wl.export_worklist, ctx), [tab.wl_select, tab.wl_export_fmt],
                            [tab.wl_export_file, tab.wl_status], **PRIVATE)
