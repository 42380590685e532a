"""Structure-level appearance randomisation (engine/synth/randomisation): appearance changes, shape does not,
and each structure keeps the sign of its difference from the background."""
import numpy as np
import pytest

from engine.errors import VisionCLIPError
from engine.synth import render_fundus
from engine.synth.pipeline import PIPELINES
from engine.synth.render import draw_layers

ALWAYS = PIPELINES["v2"].with_layer(("structure_appearance", {"p": 1.0}), before="illumination", name="sr-always")
NEVER = PIPELINES["v2"].with_layer(("structure_appearance", {"p": 0.0}), before="illumination", name="sr-never")
HALF = PIPELINES["v2"].with_layer(("structure_appearance", {"p": 0.5}), before="illumination", name="sr-half")


def _lum(img):
    return img.astype(np.float32).mean(axis=-1)


@pytest.mark.parametrize("conditions", [["dr3"], ["glaucoma"], None])
def test_appearance_changes_pixels_but_not_masks_labels_or_findings(conditions):
    base, rand = render_fundus(5, 192, conditions, "v2"), render_fundus(5, 192, conditions, ALWAYS)
    assert np.abs(base.image.astype(int) - rand.image.astype(int)).mean() > 3
    assert base.labels == rand.labels and base.findings == rand.findings
    assert base.masks.keys() == rand.masks.keys()
    assert all(np.array_equal(base.masks[k], rand.masks[k]) for k in base.masks)


def test_probability_zero_is_the_realistic_render():
    assert np.array_equal(render_fundus(7, 160, ["dr2"], "v2").image, render_fundus(7, 160, ["dr2"], NEVER).image)


def test_probability_one_half_randomises_some_renders_and_not_others():
    changed = [not np.array_equal(render_fundus(s, 96, None, "v2").image, render_fundus(s, 96, None, HALF).image)
               for s in range(16)]
    assert 3 <= sum(changed) <= 13   # p = 0.5


def test_vessels_stay_darker_and_exudates_brighter_than_their_surroundings():
    import cv2
    checked = {"vessels": 0, "exudates": 0}
    for seed in range(6):
        eye, canvas = draw_layers(seed, 256, ["dr3"], ALWAYS, stop_after="structure_appearance")
        lum = _lum(canvas.img)
        vv, va = canvas.state["vessel_maps"]
        vessel = ((vv + va) > 0.6) & eye.fov
        near = (cv2.dilate(vessel.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0) & ~vessel & eye.fov
        if vv.sum() == 0:
            continue
        near &= (vv + va) < 0.05
        assert lum[vessel].mean() < lum[near].mean(), f"seed {seed}: vessels not darker than the retina beside them"
        checked["vessels"] += 1
        ex = canvas.masks.get("hard_exudates")
        if ex is not None and ex.sum() > 4:
            ring = (cv2.dilate(ex, np.ones((7, 7), np.uint8)) > 0) & (ex == 0) & eye.fov
            assert lum[ex > 0].mean() > lum[ring].mean(), f"seed {seed}: exudates not brighter than their surroundings"
            checked["exudates"] += 1
    assert checked["vessels"] >= 5 and checked["exudates"] >= 1, checked


def test_bad_appearance_parameter_is_a_clear_error():
    with pytest.raises(VisionCLIPError, match="no parameter"):
        PIPELINES["v2"].with_layer(("structure_appearance", {"colour": 1}), before="illumination", name="x").build()
    with pytest.raises(VisionCLIPError, match="no layer 'nope'"):
        PIPELINES["v2"].with_layer("structure_appearance", before="nope", name="x")
