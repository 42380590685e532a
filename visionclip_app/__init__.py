"""VisionCLIP web app: a thin Gradio layer over the engine's public API.

* :mod:`visionclip_app.store`    - CaseStore, the SQLite review log (sqlite-utils)
* :mod:`visionclip_app.handlers` - event handlers as plain, unit-testable functions
* :mod:`visionclip_app.tabs`     - one builder per tab: its layout and its events
* :mod:`visionclip_app.ui`       - ``build_ui(ctx)``: composes the tabs into the interface
* :mod:`visionclip_app.cli`      - ``python launch.py`` options and start-up
"""
