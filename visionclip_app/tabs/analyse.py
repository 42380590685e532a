"""The Analyse tab: a photograph or DICOM file, the prompt table, probabilities and the saliency overlay."""
from __future__ import annotations

import functools
from types import SimpleNamespace

import gradio as gr
from gradio.data_classes import FileData

from .. import handlers as h
from .common import PRIVATE


class UploadImage(gr.Image):
    """gr.Image whose server side hands the handler the uploaded file's path without decoding it.

    Construct it with type="filepath", image_mode=None. Stock gr.Image opens the upload with PIL during
    preprocessing, so a corrupt or non-image file fails inside gradio with a generic error. Here the handler
    decodes (engine.load_image) and reports a clear one-line message instead. Same front end as gr.Image.
    """

    is_template = True  # use the parent's ("image") Svelte component

    def preprocess(self, payload: FileData | None) -> str | None:  # type: ignore[override]
        if payload is None:
            return None
        if payload.path:
            return str(payload.path)
        return super().preprocess(payload)  # data: URLs (some paste paths)


def layout(ctx: h.AppContext) -> SimpleNamespace:
    """Lays out the tab; returns its components by name."""
    presets = h.preset_names()
    default = h.default_preset()
    methods = h.saliency_methods()
    initial_table = h.load_preset_table(default)[0] if default else None
    examples = h.example_images(ctx)
    with gr.Tab("Analyse", id="analyse"):
        with gr.Row():
            with gr.Column(scale=1):
                image_in = UploadImage(label="Fundus photograph (drag and drop, paste or click)",
                                       type="filepath", image_mode=None, sources=["upload", "clipboard"],
                                       height=320, elem_id="image-in")
                # gr.Image cannot take a DICOM file: a plain file upload feeds the same handler
                dicom_in = gr.File(label="... or a DICOM file (.dcm) from a fundus camera",
                                   file_types=[".dcm", ".dicom"], type="filepath", height=150,
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
                decision_md = gr.Markdown("", elem_id="screening-decision")
                # no heading: the most probable class need not be the answer (the decision above is)
                probs_out = gr.Label(label="Probabilities (sorted; adapted when an adapter is chosen)",
                                     elem_id="probs-out", show_heading=False)
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
    return SimpleNamespace(image_in=image_in, dicom_in=dicom_in, analyse_btn=analyse_btn, status=status,
                           preset_dd=preset_dd, load_preset_btn=load_preset_btn, adapter_dd=adapter_dd,
                           adapter_refresh=adapter_refresh, adapter_md=adapter_md, prompt_table=prompt_table,
                           add_row_btn=add_row_btn, del_row_num=del_row_num, del_row_btn=del_row_btn,
                           prompt_file=prompt_file, save_prompts_btn=save_prompts_btn,
                           saved_prompts=saved_prompts, decision_md=decision_md, probs_out=probs_out, compare_df=compare_df,
                           quality_md=quality_md, sal_class=sal_class, sal_method=sal_method,
                           sal_target=sal_target, sal_opacity=sal_opacity, sal_detail=sal_detail,
                           original_out=original_out, overlay_out=overlay_out)


def adapter_refresher(ctx: h.AppContext):
    """An event that refreshes the adapter lists of the Analyse and Prompt lab tabs, keeping the current choice
    if it still exists."""
    def refresh_adapters(current):
        choices = h.adapter_choices(ctx)
        return (gr.update(choices=choices, value=current if current in choices else h.NO_ADAPTER),
                gr.update(choices=choices))
    return refresh_adapters


def wire(ctx: h.AppContext, tab: SimpleNamespace, analysis: gr.State, review_tab: SimpleNamespace,
         lab_tab: SimpleNamespace) -> None:
    """Analysis, saliency and prompt-table events; an analysis also fills the Review tab's summary."""
    def do_analyse(image, prompts, method, opacity, saliency_class, target, detail, previous,
                   adapter=h.NO_ADAPTER, dicom=None):
        out = h.analyse(ctx, image or dicom, prompts, method, opacity, saliency_class, target, detail, previous,
                        adapter)
        state = out[-1]
        return (*out, h.summary_markdown(state), gr.update(choices=list(state.probabilities) if state else []))

    def show_comparison(state):  # a follow-up event: the scripting API's /analyse outputs stay as documented
        rows = h.comparison_rows(state)
        return gr.update(value=rows or None, visible=bool(rows)), h.decision_markdown(state)

    analyse_outputs = [tab.status, tab.probs_out, tab.original_out, tab.overlay_out, tab.quality_md, tab.sal_class,
                       analysis, review_tab.review_summary, review_tab.corrected]
    analyse_inputs = [tab.image_in, tab.prompt_table, tab.sal_method, tab.sal_opacity, tab.sal_class, tab.sal_target,
                      tab.sal_detail, analysis, tab.adapter_dd, tab.dicom_in]
    gr.on([tab.analyse_btn.click, tab.image_in.upload], do_analyse, analyse_inputs, analyse_outputs,
          concurrency_limit=2, api_name="analyse",
          api_description="Classify a photograph with a prompt table (or a few-shot adapter) and explain one class."
          ).then(show_comparison, [analysis], [tab.compare_df, tab.decision_md], **PRIVATE)

    def do_analyse_dicom(dicom, *rest):  # the DICOM just uploaded, not a photograph still shown above
        return do_analyse(None, *rest, dicom)

    tab.dicom_in.upload(do_analyse_dicom, [tab.dicom_in, *analyse_inputs[1:-1]], analyse_outputs,
                        concurrency_limit=2, **PRIVATE).then(show_comparison, [analysis], [tab.compare_df, tab.decision_md],
                                                             **PRIVATE)
    # one upload at a time: a new photograph replaces a DICOM file and the other way round
    tab.image_in.upload(lambda: None, None, [tab.dicom_in], **PRIVATE)
    tab.dicom_in.upload(lambda: None, None, [tab.image_in], **PRIVATE)
    tab.adapter_dd.change(functools.partial(h.describe_adapter, ctx), [tab.adapter_dd], [tab.adapter_md], **PRIVATE)
    tab.adapter_refresh.click(adapter_refresher(ctx), [tab.adapter_dd],
                              [tab.adapter_dd, lab_tab.lab_adapter], **PRIVATE)

    def do_saliency(state, saliency_class, method, opacity, target, detail):
        overlay, st, state = h.update_saliency(ctx, state, saliency_class, method, opacity, target, detail)
        return overlay, st, state, h.summary_markdown(state)

    saliency_inputs = [analysis, tab.sal_class, tab.sal_method, tab.sal_opacity, tab.sal_target, tab.sal_detail]
    saliency_outputs = [tab.overlay_out, tab.status, analysis, review_tab.review_summary]
    gr.on([tab.sal_class.input, tab.sal_method.input, tab.sal_target.input, tab.sal_opacity.release], do_saliency,
          saliency_inputs, saliency_outputs, concurrency_limit=2, api_name="explain",
          api_description="Recompute the saliency overlay of this session's analysis for another class or method.")

    def do_detail(state, cls, method, opacity, target, detail):
        method = h.method_for_detail(detail, method)
        if not state:  # nothing analysed yet: just set the method for the next analysis
            return method, gr.update(), gr.update(), state, h.summary_markdown(state)
        return (method, *do_saliency(state, cls, method, opacity, target, detail))

    tab.sal_detail.input(do_detail, saliency_inputs, [tab.sal_method, *saliency_outputs], concurrency_limit=2,
                         **PRIVATE)

    gr.on([tab.load_preset_btn.click, tab.preset_dd.input], h.load_preset_table, [tab.preset_dd],
          [tab.prompt_table, tab.status], **PRIVATE)
    tab.prompt_file.upload(h.load_prompt_file, [tab.prompt_file], [tab.prompt_table, tab.status], **PRIVATE)

    def do_save_prompts(table):
        path, st = h.save_prompt_file(ctx, table)
        return (gr.update(value=path, visible=True) if path else gr.update()), st

    tab.save_prompts_btn.click(do_save_prompts, [tab.prompt_table], [tab.saved_prompts, tab.status], **PRIVATE)
    tab.add_row_btn.click(h.add_prompt_row, [tab.prompt_table], [tab.prompt_table], **PRIVATE)
    tab.del_row_btn.click(h.delete_prompt_row, [tab.prompt_table, tab.del_row_num], [tab.prompt_table, tab.status],
                          **PRIVATE)
