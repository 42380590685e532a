"""Helpers of the app's handler tests."""
from __future__ import annotations

import pandas as pd
from PIL import Image

from visionclip_app import handlers as h


def render_to(path, seed=7, size=384, conditions=None) -> str:
    from engine.synth import render_fundus
    Image.fromarray(render_fundus(seed, size, conditions).image).save(path)
    return str(path)


def small_table():
    return pd.DataFrame([["normal", "a normal healthy fundus"], ["glaucoma", "glaucoma"],
                         ["glaucoma", "large optic cup"], ["diabetic retinopathy", "haemorrhages and exudates"]],
                        columns=h.PROMPT_COLUMNS)


def is_error(status):
    return isinstance(status, str) and status.startswith(h.STATUS_ERROR) and "\n" not in status
