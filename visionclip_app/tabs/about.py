"""The About and ethics tab: what the model is, synthetic samples and the model card."""
from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from .. import handlers as h
from .common import PRIVATE


def layout(ctx: h.AppContext) -> SimpleNamespace:
    """Lays out the tab; returns its components by name."""
    with gr.Tab("About and ethics", id="about"):
        caps = h.example_captions(ctx)
        if caps:
            gr.Gallery(value=caps, label="Synthetic training-style samples (generated, not patients)",
                       columns=6, height=260, allow_preview=True)
        gr.Markdown(h.about_markdown(ctx), elem_id="about-md")
        # the full card is ~60 KB: sent only when the reader opens it
        with gr.Accordion("Full model card", open=False, elem_id="model-card-accordion") as card_acc:
            card_md = gr.Markdown("", elem_id="model-card-full")
    return SimpleNamespace(card_md=card_md, card_acc=card_acc)


def wire(tab: SimpleNamespace) -> None:
    """The model card is sent only when the reader opens it."""
    tab.card_acc.expand(lambda: h.model_card_text() or "", None, [tab.card_md], **PRIVATE)
