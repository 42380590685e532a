"""What every tab's wiring shares."""
from __future__ import annotations

import gradio as gr

PRIVATE = {"api_visibility": "private"}  # not callable by gradio_client: see README "Scripting API"


def progress_callback(progress: gr.Progress):
    """The engine's ``progress(fraction, desc)`` callback, reporting to a gradio progress bar."""
    def report(frac, desc=None):
        progress(frac, desc=desc)
    return report
