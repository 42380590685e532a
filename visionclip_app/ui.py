"""The VisionCLIP Gradio interface: ``build_ui(ctx)`` composes one builder per tab.

Each tab module in :mod:`visionclip_app.tabs` lays out its components (``layout``) and wires its events (``wire``);
all logic lives in :mod:`visionclip_app.handlers`. Events are wired after every tab is laid out because some
reach across tabs (an analysis fills the Review tab; building an adapter refreshes the Analyse and Prompt lab lists).
"""
from __future__ import annotations

import gradio as gr

from . import handlers as h
from .tabs import about, analyse, cases, prompt_lab, review, worklist
from .tabs.common import PRIVATE

CSS = """
.status-line p { margin: 0.2em 0 !important; }
#quality-box { border-left: 4px solid #e0a800; padding-left: 0.6em; }
#dicom-in .upload-container { padding-top: 2.2em; }  /* the floating label sat on "Drop File Here" */
#screening-decision h4 { margin: 0.2em 0 0.4em 0; }
footer { display: none !important; }
"""
THEME = gr.themes.Soft(primary_hue="orange", neutral_hue="slate")


def build_ui(ctx: h.AppContext) -> gr.Blocks:
    # delete_cache: every 30 min, remove cached uploads/outputs older than 2 h (gradio's upload cache).
    with gr.Blocks(title="VisionCLIP: zero-shot fundus analysis (research use only)", analytics_enabled=False,
                   delete_cache=(1800, 7200)) as demo:
        gr.Markdown(
            "# VisionCLIP\nZero-shot analysis of colour fundus photographs from free-text prompts, by a model "
            "trained **only on synthetic images**. Research and demonstration only: **not a medical device.**")
        analysis = gr.State(None)

        with gr.Tabs():
            analyse_tab = analyse.layout(ctx)
            review_tab = review.layout()
            worklist_tab = worklist.layout(ctx)
            worklist.wire(ctx, worklist_tab, [analyse_tab.prompt_table, analyse_tab.sal_method,
                                              analyse_tab.sal_opacity, analyse_tab.sal_target])
            cases_tab = cases.layout(ctx)
            lab_tab = prompt_lab.layout(ctx)
            about_tab = about.layout(ctx)

        # The scripting API (README, "Scripting API"): /analyse, /explain, /save_review, /search_cases and
        # /export_cases keep these names; every other event is private (not callable by gradio_client).
        analyse.wire(ctx, analyse_tab, analysis, review_tab, lab_tab)
        review.wire(ctx, review_tab, analysis)
        cases.wire(ctx, cases_tab, analyse_tab, lab_tab)
        prompt_lab.wire(ctx, lab_tab, analyse_tab)

        demo.load(None, None, None, js=worklist.KEYBOARD_JS)
        demo.load(analyse.adapter_refresher(ctx), [analyse_tab.adapter_dd],  # adapters built since launch
                  [analyse_tab.adapter_dd, lab_tab.lab_adapter], **PRIVATE)
        about.wire(about_tab)
    return demo
