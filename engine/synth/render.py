"""Procedural colour fundus photograph renderer (Med-AIGC): case -> eye -> layers -> image.

``render_fundus`` samples the case (conditions, grades, quality) from its own stream, builds the eye
geometry, then runs a named pipeline of layers, each drawing from its own stream seeded by
[seed, conditions, layer name]. Adding or removing a layer changes no other layer's random draws.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from engine.errors import VisionCLIPError
from engine.synth.canvas import Canvas
from engine.synth.case import sample_case
from engine.synth.eye import Eye
from engine.synth.pipeline import DEFAULT_PIPELINE, PIPELINES, get_pipeline
from engine.synth.schema import parse_conditions

GENERATOR_VERSION = PIPELINES[DEFAULT_PIPELINE].version
GENERATOR_VERSIONS = {name: p.version for name, p in PIPELINES.items()}


@dataclass
class SyntheticFundus:
    image: np.ndarray
    masks: dict = field(default_factory=dict)          # finding name -> bool mask (what the caption names)
    structures: dict = field(default_factory=dict)     # anatomy in every render: "optic_disc", "optic_cup"
    labels: dict = field(default_factory=dict)
    findings: list = field(default_factory=list)
    generator_version: str = GENERATOR_VERSION


def _check(seed, size):
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise VisionCLIPError(f"Seed must be a non-negative integer, got {seed!r}.")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 64 <= size <= 4096:
        raise VisionCLIPError(f"Image size must be an integer from 64 to 4096, got {size!r}.")


def render_fundus(seed: int, size: int = 512, conditions: list[str] | None = None, pipeline=None) -> SyntheticFundus:
    """Render one synthetic colour fundus photograph; deterministic in (seed, size, conditions, pipeline).
    ``pipeline``: a name in PIPELINES ("v1" default, "v2"), a Pipeline, or a list of layer names."""
    pipe = get_pipeline(pipeline)
    eye, canvas = draw_layers(seed, size, conditions, pipe)
    return _finish(eye, canvas, pipe.version)


def draw_layers(seed, size, conditions=None, pipeline=None, stop_after: str | None = None):
    """Run a pipeline's layers (up to and including ``stop_after``); returns (eye, canvas) before the
    image is finished. For tests and experiments that look at one layer's raw output."""
    _check(seed, size)
    pipe = get_pipeline(pipeline)
    case = sample_case(int(seed), int(size), parse_conditions(conditions), pipe.case)
    eye = Eye(case, case.rng("eye"))
    canvas = Canvas(case.size)
    for layer in pipe.build():
        if layer.applies(case):
            layer.draw(eye, canvas, case.rng(layer.name))
        if layer.name == stop_after:
            break
    return eye, canvas


def _finish(eye, canvas, version):
    img = canvas.img
    if img is None:
        raise VisionCLIPError("The pipeline drew no image (it needs a background layer).")
    out = img if img.dtype == np.uint8 else cv2.convertScaleAbs(img, alpha=255.0)
    fov = eye.fov
    out = cv2.bitwise_and(out, out, mask=fov.view(np.uint8))  # black outside the field
    lab = eye.case.labels
    dxp, dyp = eye.disc_px
    if not fov[int(np.clip(dyp, 0, eye.S - 1)), int(np.clip(dxp, 0, eye.S - 1))]:
        lab["is_optic_disc_readable"] = 0
    masks = {}
    for name, m in canvas.masks.items():
        mb = (m > 0) & fov
        if mb.any():
            masks[name] = mb
    findings = [f for f in canvas.findings if f["name"] in masks]
    structures = {name: m & fov for name, m in canvas.structures.items()}
    return SyntheticFundus(image=out, masks=masks, structures=structures, labels=lab, findings=findings,
                           generator_version=version)
