"""VisionCLIP web app: a thin Gradio layer over the engine's public API.

* :mod:`visionclip_app.store`    - CaseStore, the SQLite review log (sqlite-utils)
* :mod:`visionclip_app.handlers` - event handlers as plain, unit-testable functions
* :mod:`visionclip_app.ui`       - ``build_ui(ctx)``: the whole interface in one function
* :mod:`visionclip_app.cli`      - ``python launch.py`` options and start-up
"""
