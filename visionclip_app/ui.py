"""The VisionCLIP Gradio interface, built in one function: ``build_ui(ctx)``.

All logic lives in :mod:`visionclip_app.handlers`; this module only lays out components and wires events.
"""
from __future__ import annotations

import functools

import gradio as gr
from gradio.data_classes import FileData

from . import handlers as h
from .store import ITEM_STATES, MAX_NOTES_CHARS, VERDICTS

CSS = """
.status-line p { margin: 0.2em 0 !important; }
#quality-box { border-left: 4px solid #e0a800; padding-left: 0.6em; }
footer { display: none !important; }
"""
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
PRIVATE = {"api_visibility": "private"}  # not callable by gradio_client: see README "Scripting API"
THEME = gr.themes.Soft(primary_hue="orange", neutral_hue="slate")


class UploadImage(gr.Image):
    """gr.Image whose server side hands the handler the uploaded file's path without decoding it.

    Construct it with type="filepath", image_mode=None. Stock gr.Image opens the upload with PIL during preprocessing, so a corrupt or non-image file fails
    inside gradio with a generic error. Here the handler decodes (engine.load_image) and reports a clear
    one-line message instead. Same front end as gr.Image.
    """

    is_template = True  # use the parent's ("image") Svelte component

    def preprocess(self, payload: FileData | None) -> str | None:  # type: ignore[override]
        if payload is None:
            return None
        if payload.path:
            return str(payload.path)
        return super().preprocess(payload)  # data: URLs (some paste paths)


def _prog_adapter(progress: gr.Progress):
    def f(frac, desc=None):
        progress(frac, desc=desc)
    return f


def worklist_tab(ctx: h.AppContext, analysis_settings: list) -> None:
    """The Worklist tab and its events; ``analysis_settings`` are the Analyse tab's prompt table, method,
    opacity and target components, which every worklist analysis uses."""
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
                wl_calibration = gr.Dropdown(list(wl.CALIBRATION_CHOICES), value=wl.CALIBRATION_OFF,
                                             label="Label-free calibration (transductive)", elem_id="wl-calibration",
                                             info="Calibrates all not-yet-reviewed images together; off by default")
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

    wl_view = [wl_status, wl_probs, wl_overlay, wl_item, wl_progress, wl_pos, wl_analysis, wl_corrected]

    def show_item(wid, pos, table, method, opacity, target, previous):
        out = wl.open_item(ctx, wid, pos, table, method, opacity, target, previous)
        state = out[-1]
        return (*out, gr.update(choices=list(state.probabilities) if state else [], value=[]))

    def do_create(name, folder, files, readings, recursive):
        return wl.create_worklist(ctx, name, folder, files, readings, recursive)

    wl_create_btn.click(do_create, [wl_name, wl_folder, wl_files, wl_readings, wl_recursive], [wl_select, wl_status],
                        **PRIVATE)

    def do_open(wid, reviewer_name, table, method, opacity, target, previous):
        if wid is None:
            return (h.error_status("Choose a worklist first."), *[gr.update()] * (len(wl_view) - 1))
        return show_item(wid, wl.start_position(ctx, wid, reviewer_name), table, method, opacity, target, previous)

    wl_open_btn.click(do_open, [wl_select, wl_reviewer, *analysis_settings, wl_analysis], wl_view, **PRIVATE)

    def mover(move):
        def do_move(wid, pos, reviewer_name, table, method, opacity, target, previous):
            try:
                new = wl.step(ctx, wid, pos, move, reviewer_name)
            except h.UserError as e:
                return (h.error_status(e), *[gr.update()] * (len(wl_view) - 1))
            return show_item(wid, new, table, method, opacity, target, previous)
        return do_move

    move_inputs = [wl_select, wl_pos, wl_reviewer, *analysis_settings, wl_analysis]
    for btn, move in ((wl_prev, "previous"), (wl_next, "next"), (wl_next_open, "next unreviewed")):
        btn.click(mover(move), move_inputs, wl_view, concurrency_limit=2, **PRIVATE)

    def do_skip(wid, pos, reviewer_name, table, method, opacity, target, previous):
        status_line, progress = wl.skip_item(ctx, wid, pos)
        if status_line.startswith(h.STATUS_ERROR):
            return (status_line, *[gr.update()] * (len(wl_view) - 1))
        return mover("next unreviewed")(wid, pos, reviewer_name, table, method, opacity, target, previous)

    wl_skip.click(do_skip, move_inputs, wl_view, concurrency_limit=2, **PRIVATE)

    def reader(verdict_value):
        def do_read(wid, pos, reviewer_name, table, method, opacity, target, previous, labels):
            status_line, progress = wl.save_reading(ctx, wid, pos, previous, reviewer_name, verdict_value, labels)
            if status_line.startswith(h.STATUS_ERROR):
                return (status_line, *[gr.update()] * (len(wl_view) - 1))
            nxt = wl.step(ctx, wid, pos, "next unreviewed", reviewer_name)
            out = show_item(wid, nxt, table, method, opacity, target, previous)
            return (status_line + (" " + out[0] if nxt != pos else " All images read."), *out[1:])
        return do_read

    for btn, verdict_value in ((wl_agree, "agree"), (wl_disagree, "disagree"), (wl_ungradable, "ungradable")):
        btn.click(reader(verdict_value), [*move_inputs, wl_corrected], wl_view, concurrency_limit=2, **PRIVATE)

    def do_batch(wid, table, calibration, progress=gr.Progress()):
        return wl.analyse_worklist(ctx, wid, table, progress=_prog_adapter(progress), transductive=calibration)

    wl_batch_btn.click(do_batch, [wl_select, analysis_settings[0], wl_calibration], [wl_status], concurrency_limit=1,
                       **PRIVATE)
    wl_table_btn.click(functools.partial(wl.results_table, ctx), [wl_select, wl_filter_pred, wl_filter_state],
                       [wl_table, wl_filter_pred, wl_status], **PRIVATE)
    wl_export_btn.click(functools.partial(wl.export_worklist, ctx), [wl_select, wl_export_fmt],
                        [wl_export_file, wl_status], **PRIVATE)


def build_ui(ctx: h.AppContext) -> gr.Blocks:
    presets = h.preset_names()
    default = h.default_preset()
    methods = h.saliency_methods()
    initial_table = h.load_preset_table(default)[0] if default else None
    examples = h.example_images(ctx)

    # delete_cache: every 30 min, remove cached uploads/outputs older than 2 h (gradio's upload cache).
    with gr.Blocks(title="VisionCLIP: zero-shot fundus analysis (research use only)", analytics_enabled=False,
                   delete_cache=(1800, 7200)) as demo:
        gr.Markdown(
            "# VisionCLIP\nZero-shot analysis of colour fundus photographs from free-text prompts, by a model "
            "trained **only on synthetic images**. Research and demonstration only: **not a medical device.**")
        analysis = gr.State(None)

        with gr.Tabs():
            # ------------------------------------------------------------------ 1. Analyse
            with gr.Tab("Analyse", id="analyse"):
                with gr.Row():
                    with gr.Column(scale=1):
                        image_in = UploadImage(label="Fundus photograph (drag and drop, paste or click)",
                                               type="filepath", image_mode=None, sources=["upload", "clipboard"],
                                               height=320, elem_id="image-in")
                        # gr.Image cannot take a DICOM file: a plain file upload feeds the same handler
                        dicom_in = gr.File(label="... or a DICOM file (.dcm) from a fundus camera",
                                           file_types=[".dcm", ".dicom"], type="filepath", height=70,
                                           elem_id="dicom-in")
                        if examples:
                            gr.Examples(examples=[[p] for p in examples], inputs=[image_in],
                                        label="Synthetic examples", examples_per_page=8)
                        analyse_btn = gr.Button("Analyse", variant="primary", elem_id="analyse-btn")
                        status = gr.Markdown("", label="analysis status", elem_id="analyse-status",
                                             elem_classes=["status-line"])
                    with gr.Column(scale=1):
                        with gr.Row():
                            preset_dd = gr.Dropdown(presets, value=default, label="Prompt preset", scale=2,
                                                    elem_id="preset-dd")
                            load_preset_btn = gr.Button("Load preset", scale=1, size="sm")
                        with gr.Row():
                            adapter_dd = gr.Dropdown(h.adapter_choices(ctx), value=h.NO_ADAPTER, scale=3,
                                                     label="Few-shot adapter (built in Cases; none = zero-shot)",
                                                     elem_id="adapter-dd")
                            adapter_refresh = gr.Button("Refresh list", scale=1, size="sm")
                        adapter_md = gr.Markdown("", elem_id="adapter-md", elem_classes=["status-line"])
                        prompt_table = gr.Dataframe(
                            value=initial_table, headers=h.PROMPT_COLUMNS, datatype=["str", "str"],
                            column_count=2, interactive=True, wrap=True, max_height=330, column_widths=["32%", "68%"],
                            label=("Prompts: one row per prompt; rows with the same class are averaged. "
                                   "A class written 'class > subclass' gets the sum of its subclasses' probabilities"),
                            elem_id="prompt-table", show_row_numbers=True)
                        with gr.Row():
                            add_row_btn = gr.Button("Add row", size="sm")
                            del_row_num = gr.Number(label="Row #", precision=0, minimum=1, value=1,
                                                    min_width=80, scale=1, show_label=False)
                            del_row_btn = gr.Button("Remove row #", size="sm")
                        with gr.Row():
                            prompt_file = gr.UploadButton("Load prompt-set JSON", file_types=[".json"],
                                                          type="filepath", size="sm")
                            save_prompts_btn = gr.Button("Save prompt set", size="sm")
                        saved_prompts = gr.File(label="Saved prompt set (download)", interactive=False,
                                                height=70, visible=False)
                with gr.Row():
                    with gr.Column(scale=1):
                        probs_out = gr.Label(label="Probabilities (sorted; adapted when an adapter is chosen)",
                                             elem_id="probs-out")
                        compare_df = gr.Dataframe(headers=h.COMPARISON_COLUMNS, interactive=False, visible=False,
                                                  label="Zero-shot and adapted probabilities", elem_id="compare-df")
                        quality_md = gr.Markdown("", label="quality", elem_id="quality-box")
                    with gr.Column(scale=2):
                        with gr.Row():
                            sal_class = gr.Dropdown([], value=None, label="Saliency for class", interactive=True,
                                                    allow_custom_value=False, elem_id="sal-class")
                            sal_method = gr.Dropdown(methods, value=methods[0], label="Method", elem_id="sal-method",
                                                     min_width=190)
                            sal_target = gr.Radio(list(h.SALIENCY_TARGETS), value=h.SALIENCY_TARGETS[0],
                                                  label="Explain", elem_id="sal-target",
                                                  info="softmax: why this class rather than the others; "
                                                       "similarity: what matches its prompts")
                            sal_opacity = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Overlay opacity")
                            sal_detail = gr.Checkbox(False, label="Lesion-level detail", elem_id="sal-detail",
                                                     info="a grid 8x finer, for small scattered lesions such as "
                                                          "DR dots; switches the method to gradcam-elementwise")
                        with gr.Row():
                            original_out = gr.Image(label="Original", type="pil", interactive=False, height=360,
                                                    format="jpeg")
                            overlay_out = gr.Image(label="Saliency overlay", type="pil", interactive=False,
                                                   height=360, elem_id="overlay-out", format="jpeg")

            # ------------------------------------------------------------------ 2. Review and log
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

            # ------------------------------------------------------------------ 3. Worklist
            worklist_tab(ctx, [prompt_table, sal_method, sal_opacity, sal_target])

            # ------------------------------------------------------------------ 4. Cases
            with gr.Tab("Cases", id="cases") as cases_tab:
                with gr.Row():
                    f_reviewer = gr.Textbox(label="Reviewer", max_lines=1)
                    f_label = gr.Textbox(label="Label (predicted or corrected)", max_lines=1)
                    f_verdict = gr.Dropdown(["any", *VERDICTS], value="any", label="Verdict")
                    f_from = gr.Textbox(label="From (YYYY-MM-DD, UTC)", max_lines=1)
                    f_to = gr.Textbox(label="To (YYYY-MM-DD, UTC)", max_lines=1)
                    f_text = gr.Textbox(label="Search notes", max_lines=1)
                with gr.Row():
                    search_btn = gr.Button("Search", variant="primary", elem_id="search-btn")
                    export_fmt = gr.Radio(list(h.EXPORT_FORMATS), value="csv", label="Export format",
                                          elem_id="export-format", min_width=160)
                    export_btn = gr.Button("Export", elem_id="export-btn")
                cases_status = gr.Markdown("", label="cases status", elem_id="cases-status", elem_classes=["status-line"])
                export_file = gr.File(label="Export", interactive=False, elem_id="export-file")
                agreement_md = gr.Markdown("", label="agreement")
                cases_df = gr.Dataframe(headers=h.CASE_COLUMNS, interactive=False, wrap=True, max_height=360,
                                        label="Cases (click a row to open it)", elem_id="cases-df")
                with gr.Row():
                    case_id = gr.Number(label="Case id", precision=0, value=None, elem_id="case-id")
                    open_btn = gr.Button("Open case")
                with gr.Row():
                    case_thumb = gr.Image(label="Thumbnail", interactive=False, height=240)
                    case_sal = gr.Image(label="Saliency at review time", interactive=False, height=240)
                    agreement_plot = gr.Plot(label="Model vs reviewer")
                case_md = gr.Markdown("", elem_id="case-md")
                history_df = gr.Dataframe(headers=h.HISTORY_COLUMNS, interactive=False, label="History (append-only)")
                with gr.Accordion("Add a correction (appends a revision)", open=False):
                    with gr.Row():
                        c_reviewer = gr.Textbox(label="Reviewer", max_lines=1)
                        c_verdict = gr.Radio(list(VERDICTS), value="disagree", label="Verdict")
                        c_conf = gr.Slider(0.0, 1.0, value=0.8, step=0.05, label="Confidence")
                    c_labels = gr.Textbox(label="Corrected label(s), comma-separated", max_lines=1)
                    c_notes = gr.Textbox(label="Notes", lines=2)
                    c_btn = gr.Button("Append correction")
                with gr.Accordion("Build adapter from reviewed cases", open=False):
                    gr.Markdown("Fits a few-shot adapter on the agreed or corrected, gradable cases (their stored "
                                "thumbnails), with the Analyse tab's prompt set. The base model is not changed; "
                                "pick the adapter on the Analyse tab.")
                    with gr.Row():
                        b_reviewer = gr.Textbox(label="Only this reviewer (optional)", max_lines=1,
                                                elem_id="adapter-reviewer")
                        b_method = gr.Dropdown(list(h.ADAPTER_METHODS), value=h.default_adapter_method(ctx.model),
                                               label="Method", elem_id="adapter-method")
                        b_count_btn = gr.Button("Count reviewed cases", elem_id="adapter-count")
                        b_build_btn = gr.Button("Build adapter", variant="primary", elem_id="adapter-build")
                    b_status = gr.Markdown("", elem_id="adapter-status", elem_classes=["status-line"])

            # ------------------------------------------------------------------ 5. Prompt lab
            with gr.Tab("Prompt lab", id="lab"):
                gr.Markdown("Compare one or two prompt sets on a labelled folder (`labels.csv` with columns "
                            "`path,label`) or on a freshly generated, balanced synthetic benchmark.")
                set_choices = [h.EDITOR_CHOICE, *presets]
                with gr.Row():
                    lab_a = gr.Dropdown(set_choices, value=default or h.EDITOR_CHOICE, label="Prompt set A")
                    lab_b = gr.Dropdown([h.NONE_CHOICE, *set_choices], value=h.EDITOR_CHOICE, label="Prompt set B")
                with gr.Row():
                    lab_source = gr.Radio([("synthetic benchmark", "synthetic"), ("labelled folder", "folder")],
                                          value="synthetic", label="Data")
                    lab_n = gr.Number(value=48, precision=0, label="Synthetic images", minimum=4, maximum=2000,
                                      elem_id="lab-n")
                    lab_seed = gr.Number(value=0, precision=0, label="Seed", minimum=0)
                    lab_folder = gr.Textbox(label="Folder under the data root (--data-root)", max_lines=1)
                lab_btn = gr.Button("Evaluate", variant="primary", elem_id="lab-btn")
                with gr.Row():
                    lab_adapter = gr.Dropdown(h.adapter_choices(ctx), value=h.NO_ADAPTER, scale=3,
                                              label="... or compare zero-shot against an adapter (labelled folder)",
                                              elem_id="lab-adapter")
                    lab_adapter_btn = gr.Button("Compare zero-shot vs adapter", scale=1, elem_id="lab-adapter-btn")
                lab_status = gr.Markdown("", elem_classes=["status-line"], elem_id="lab-status")
                with gr.Row():
                    with gr.Column():
                        lab_md_a = gr.Markdown("", elem_id="lab-md-a")
                        lab_fig_a = gr.Plot(label="Confusion matrix A")
                    with gr.Column():
                        lab_md_b = gr.Markdown("", elem_id="lab-md-b")
                        lab_fig_b = gr.Plot(label="Confusion matrix B")

            # ------------------------------------------------------------------ 6. About / ethics
            with gr.Tab("About and ethics", id="about"):
                caps = h.example_captions(ctx)
                if caps:
                    gr.Gallery(value=caps, label="Synthetic training-style samples (generated, not patients)",
                               columns=6, height=260, allow_preview=True)
                gr.Markdown(h.about_markdown(ctx), elem_id="about-md")
                # the full card is ~60 KB: sent only when the reader opens it
                with gr.Accordion("Full model card", open=False, elem_id="model-card-accordion") as card_acc:
                    card_md = gr.Markdown("", elem_id="model-card-full")

        # ---------------------------------------------------------------------- events
        # The scripting API (README, "Scripting API"): /analyse, /explain, /save_review, /search_cases and
        # /export_cases keep these names; every other event is private (not callable by gradio_client).
        
        def do_analyse(image, prompts, method, opacity, saliency_class, target, detail, previous,
                       adapter=h.NO_ADAPTER, dicom=None):
            out = h.analyse(ctx, image or dicom, prompts, method, opacity, saliency_class, target, detail, previous,
                            adapter)
            state = out[-1]
            return (*out, h.summary_markdown(state), gr.update(choices=list(state.probabilities) if state else []))

        def show_comparison(state):  # a follow-up event: the scripting API's /analyse outputs stay as documented
            rows = h.comparison_rows(state)
            return gr.update(value=rows or None, visible=bool(rows))

        analyse_outputs = [status, probs_out, original_out, overlay_out, quality_md, sal_class, analysis,
                           review_summary, corrected]
        analyse_inputs = [image_in, prompt_table, sal_method, sal_opacity, sal_class, sal_target, sal_detail, analysis,
                          adapter_dd, dicom_in]
        gr.on([analyse_btn.click, image_in.upload], do_analyse, analyse_inputs, analyse_outputs,
              concurrency_limit=2, api_name="analyse",
              api_description="Classify a photograph with a prompt table (or a few-shot adapter) and explain one class."
              ).then(show_comparison, [analysis], [compare_df], **PRIVATE)

        def do_analyse_dicom(dicom, *rest):  # the DICOM just uploaded, not a photograph still shown above
            return do_analyse(None, *rest, dicom)

        dicom_in.upload(do_analyse_dicom, [dicom_in, *analyse_inputs[1:-1]], analyse_outputs, concurrency_limit=2,
                        **PRIVATE).then(show_comparison, [analysis], [compare_df], **PRIVATE)
        # one upload at a time: a new photograph replaces a DICOM file and the other way round
        image_in.upload(lambda: None, None, [dicom_in], **PRIVATE)
        dicom_in.upload(lambda: None, None, [image_in], **PRIVATE)
        adapter_dd.change(functools.partial(h.describe_adapter, ctx), [adapter_dd], [adapter_md], **PRIVATE)

        def refresh_adapters(current):
            choices = h.adapter_choices(ctx)
            return (gr.update(choices=choices, value=current if current in choices else h.NO_ADAPTER),
                    gr.update(choices=choices))

        adapter_refresh.click(refresh_adapters, [adapter_dd], [adapter_dd, lab_adapter], **PRIVATE)

        def do_saliency(state, saliency_class, method, opacity, target, detail):
            overlay, st, state = h.update_saliency(ctx, state, saliency_class, method, opacity, target, detail)
            return overlay, st, state, h.summary_markdown(state)

        saliency_inputs = [analysis, sal_class, sal_method, sal_opacity, sal_target, sal_detail]
        saliency_outputs = [overlay_out, status, analysis, review_summary]
        gr.on([sal_class.input, sal_method.input, sal_target.input, sal_opacity.release], do_saliency, saliency_inputs,
              saliency_outputs, concurrency_limit=2, api_name="explain",
              api_description="Recompute the saliency overlay of this session's analysis for another class or method.")

        def do_detail(state, cls, method, opacity, target, detail):
            method = h.method_for_detail(detail, method)
            if not state:  # nothing analysed yet: just set the method for the next analysis
                return method, gr.update(), gr.update(), state, h.summary_markdown(state)
            return (method, *do_saliency(state, cls, method, opacity, target, detail))

        sal_detail.input(do_detail, saliency_inputs, [sal_method, *saliency_outputs], concurrency_limit=2, **PRIVATE)

        gr.on([load_preset_btn.click, preset_dd.input], h.load_preset_table, [preset_dd], [prompt_table, status],
              **PRIVATE)
        prompt_file.upload(h.load_prompt_file, [prompt_file], [prompt_table, status], **PRIVATE)

        def do_save_prompts(table):
            path, st = h.save_prompt_file(ctx, table)
            return (gr.update(value=path, visible=True) if path else gr.update()), st

        save_prompts_btn.click(do_save_prompts, [prompt_table], [saved_prompts, status], **PRIVATE)
        add_row_btn.click(h.add_prompt_row, [prompt_table], [prompt_table], **PRIVATE)
        del_row_btn.click(h.delete_prompt_row, [prompt_table, del_row_num], [prompt_table, status], **PRIVATE)

        def do_save_review(state, reviewer, verdict, corrected_labels, confidence, notes, opt_in, patient_id):
            return h.save_review(ctx, state, reviewer, verdict, corrected_labels, confidence, notes, opt_in, patient_id)

        save_btn.click(do_save_review, [analysis, reviewer, verdict, corrected, confidence, notes, opt_in, patient_id],
                       [review_status, saved_case_id], api_name="save_review",
                       api_description="Log this session's analysis with a review; returns (status, case id).")

        filters = [f_reviewer, f_label, f_verdict, f_from, f_to, f_text]
        gr.on([search_btn.click, cases_tab.select], functools.partial(h.search_cases, ctx), filters,
              [cases_df, agreement_md, agreement_plot, cases_status], api_name="search_cases",
              api_description="Search the case log; returns (cases table, agreement, figure, status).")
        export_btn.click(functools.partial(h.export_cases, ctx), [export_fmt, *filters], [export_file, cases_status],
                         api_name="export_cases", api_description="Export the matching cases as CSV or JSON.")
        open_outputs = [case_thumb, case_sal, case_md, history_df, cases_status]
        open_btn.click(functools.partial(h.open_case, ctx), [case_id], open_outputs, **PRIVATE)

        def select_case(evt: gr.SelectData, df):
            cid = h.case_id_from_selection(df, evt.index)
            return (cid, *h.open_case(ctx, cid)) if cid is not None else (gr.update(), *[gr.update()] * 5)

        cases_df.select(select_case, [cases_df], [case_id, *open_outputs], **PRIVATE)

        def do_correction(cid, rv, vd, labels, conf, nts):
            st = h.add_correction(ctx, cid, rv, vd, labels, conf, nts)
            if st.startswith(h.STATUS_OK):
                return (*h.open_case(ctx, cid)[:4], st)
            return gr.update(), gr.update(), gr.update(), gr.update(), st

        c_btn.click(do_correction, [case_id, c_reviewer, c_verdict, c_labels, c_conf, c_notes], open_outputs,
                    **PRIVATE)

        def do_lab(source, folder, n, seed, a, b, table, progress=gr.Progress()):
            return h.run_prompt_lab(ctx, source, folder, n, seed, a, b, table, progress=_prog_adapter(progress))

        def do_count(reviewer_name):
            return h.reviewed_counts(ctx, reviewer_name)[1]

        b_count_btn.click(do_count, [b_reviewer], [b_status], **PRIVATE)

        def do_build(table, reviewer_name, method):
            st, _ = h.build_adapter_from_cases(ctx, table, reviewer_name, method)
            choices = gr.update(choices=h.adapter_choices(ctx))
            return st, choices, choices

        b_build_btn.click(do_build, [prompt_table, b_reviewer, b_method], [b_status, adapter_dd, lab_adapter],
                          concurrency_limit=1, **PRIVATE)

        def do_adapter_lab(folder, choice, progress=gr.Progress()):
            return h.run_adapter_lab(ctx, folder, choice, progress=_prog_adapter(progress))

        lab_adapter_btn.click(do_adapter_lab, [lab_folder, lab_adapter],
                              [lab_md_a, lab_fig_a, lab_md_b, lab_fig_b, lab_status], concurrency_limit=1, **PRIVATE)

        lab_btn.click(do_lab, [lab_source, lab_folder, lab_n, lab_seed, lab_a, lab_b, prompt_table],
                      [lab_md_a, lab_fig_a, lab_md_b, lab_fig_b, lab_status], concurrency_limit=1, **PRIVATE)

        demo.load(None, None, None, js=KEYBOARD_JS)
        demo.load(refresh_adapters, [adapter_dd], [adapter_dd, lab_adapter], **PRIVATE)  # built since launch
        card_acc.expand(lambda: h.model_card_text() or "", None, [card_md], **PRIVATE)
    return demo
