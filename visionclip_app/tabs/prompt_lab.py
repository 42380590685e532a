"""The Prompt lab tab: compare prompt sets, or zero-shot against an adapter, on labelled images."""
from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from .. import handlers as h
from .common import PRIVATE, progress_callback


def layout(ctx: h.AppContext) -> SimpleNamespace:
    """Lays out the tab; returns its components by name."""
    presets = h.preset_names()
    default = h.default_preset()
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
    return SimpleNamespace(lab_a=lab_a, lab_b=lab_b, lab_source=lab_source, lab_n=lab_n, lab_seed=lab_seed,
                           lab_folder=lab_folder, lab_btn=lab_btn, lab_adapter=lab_adapter,
                           lab_adapter_btn=lab_adapter_btn, lab_status=lab_status, lab_md_a=lab_md_a,
                           lab_fig_a=lab_fig_a, lab_md_b=lab_md_b, lab_fig_b=lab_fig_b)


def wire(ctx: h.AppContext, tab: SimpleNamespace, analyse_tab: SimpleNamespace) -> None:
    """Evaluation events; prompt set "editor" is the Analyse tab's prompt table."""
    def do_lab(source, folder, n, seed, a, b, table, progress=gr.Progress()):
        return h.run_prompt_lab(ctx, source, folder, n, seed, a, b, table, progress=progress_callback(progress))

    def do_adapter_lab(folder, choice, progress=gr.Progress()):
        return h.run_adapter_lab(ctx, folder, choice, progress=progress_callback(progress))

    results = [tab.lab_md_a, tab.lab_fig_a, tab.lab_md_b, tab.lab_fig_b, tab.lab_status]
    tab.lab_adapter_btn.click(do_adapter_lab, [tab.lab_folder, tab.lab_adapter], results, concurrency_limit=1,
                              **PRIVATE)
    tab.lab_btn.click(do_lab, [tab.lab_source, tab.lab_folder, tab.lab_n, tab.lab_seed, tab.lab_a, tab.lab_b,
                               analyse_tab.prompt_table], results, concurrency_limit=1, **PRIVATE)
