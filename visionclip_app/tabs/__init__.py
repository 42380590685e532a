"""One builder per tab of the interface; :func:`visionclip_app.ui.build_ui` composes them in tab order."""
