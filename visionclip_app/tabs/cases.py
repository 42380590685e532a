"""The Cases tab: search, open, correct and export logged cases; build a few-shot adapter from them."""
from __future__ import annotations

import functools
from types import SimpleNamespace

import gradio as gr

from .. import handlers as h
from ..store import VERDICTS
from .common import PRIVATE


def layout(ctx: h.AppContext) -> SimpleNamespace:
    """Lays out the tab; returns its components by name."""
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
    return SimpleNamespace(f_reviewer=f_reviewer, f_label=f_label, f_verdict=f_verdict, f_from=f_from, f_to=f_to,
                           f_text=f_text, search_btn=search_btn, export_fmt=export_fmt, export_btn=export_btn,
                           cases_status=cases_status, export_file=export_file, agreement_md=agreement_md,
                           cases_df=cases_df, case_id=case_id, open_btn=open_btn, case_thumb=case_thumb,
                           case_sal=case_sal, agreement_plot=agreement_plot, case_md=case_md,
                           history_df=history_df, c_reviewer=c_reviewer, c_verdict=c_verdict, c_conf=c_conf,
                           c_labels=c_labels, c_notes=c_notes, c_btn=c_btn, b_reviewer=b_reviewer,
                           b_method=b_method, b_count_btn=b_count_btn, b_build_btn=b_build_btn, b_status=b_status,
                           cases_tab=cases_tab)


def wire(ctx: h.AppContext, tab: SimpleNamespace, analyse_tab: SimpleNamespace, lab_tab: SimpleNamespace) -> None:
    """Search, export, open and correction events (search and export are scripting API), and adapter building,
    which uses the Analyse tab's prompt table and refreshes the adapter lists."""
    filters = [tab.f_reviewer, tab.f_label, tab.f_verdict, tab.f_from, tab.f_to, tab.f_text]
    gr.on([tab.search_btn.click, tab.cases_tab.select], functools.partial(h.search_cases, ctx), filters,
          [tab.cases_df, tab.agreement_md, tab.agreement_plot, tab.cases_status], api_name="search_cases",
          api_description="Search the case log; returns (cases table, agreement, figure, status).")
    tab.export_btn.click(functools.partial(h.export_cases, ctx), [tab.export_fmt, *filters],
                         [tab.export_file, tab.cases_status], api_name="export_cases",
                         api_description="Export the matching cases as CSV or JSON.")
    open_outputs = [tab.case_thumb, tab.case_sal, tab.case_md, tab.history_df, tab.cases_status]
    tab.open_btn.click(functools.partial(h.open_case, ctx), [tab.case_id], open_outputs, **PRIVATE)

    def select_case(evt: gr.SelectData, df):
        cid = h.case_id_from_selection(df, evt.index)
        return (cid, *h.open_case(ctx, cid)) if cid is not None else (gr.update(), *[gr.update()] * 5)

    tab.cases_df.select(select_case, [tab.cases_df], [tab.case_id, *open_outputs], **PRIVATE)

    def do_correction(cid, rv, vd, labels, conf, nts):
        st = h.add_correction(ctx, cid, rv, vd, labels, conf, nts)
        if st.startswith(h.STATUS_OK):
            return (*h.open_case(ctx, cid)[:4], st)
        return gr.update(), gr.update(), gr.update(), gr.update(), st

    tab.c_btn.click(do_correction, [tab.case_id, tab.c_reviewer, tab.c_verdict, tab.c_labels, tab.c_conf, tab.c_notes],
                    open_outputs, **PRIVATE)

    def do_count(reviewer_name):
        return h.reviewed_counts(ctx, reviewer_name)[1]

    tab.b_count_btn.click(do_count, [tab.b_reviewer], [tab.b_status], **PRIVATE)

    def do_build(table, reviewer_name, method):
        st, _ = h.build_adapter_from_cases(ctx, table, reviewer_name, method)
        choices = gr.update(choices=h.adapter_choices(ctx))
        return st, choices, choices

    tab.b_build_btn.click(do_build, [analyse_tab.prompt_table, tab.b_reviewer, tab.b_method],
                          [tab.b_status, analyse_tab.adapter_dd, lab_tab.lab_adapter], concurrency_limit=1, **PRIVATE)
