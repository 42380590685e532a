"""Healthy-eye variation (engine/synth/anatomy/normal_variants.py, camera_haze): drawn on healthy eyes
only, changing pixels but never labels, findings or masks, so healthy captions stay plain."""
import numpy as np
import pytest

from engine.synth import render_fundus
from engine.synth.case import sample_case
from engine.synth.pipeline import PIPELINES
from engine.synth.anatomy.normal_variants import is_healthy

V1 = PIPELINES["v1"]
ALWAYS = (V1.with_layer(("normal_variants", {"p_foveal_reflex": 1.0, "p_macular_ring": 1.0, "p_sheen": 1.0,
                                             "p_drusen": 1.0, "p_myelinated": 1.0}), before="lesion_composite", name="nv")
          .with_layer(("camera_haze", {"p": 1.0}), before="defocus", name="nv"))
VARIANTS_ONLY = V1.with_layer(("normal_variants", {"p_foveal_reflex": 1.0, "p_drusen": 1.0}), before="lesion_composite",
                              name="nv-only")


def test_healthy_eyes_change_pixels_not_labels_findings_or_masks():
    base, varied = render_fundus(3, 192, ["normal"], V1), render_fundus(3, 192, ["normal"], ALWAYS)
    assert np.abs(base.image.astype(int) - varied.image.astype(int)).mean() > 1
    assert base.labels == varied.labels and base.findings == varied.findings == []
    assert base.masks.keys() == varied.masks.keys()


@pytest.mark.parametrize("conditions", [["dr2"], ["amd"], ["glaucoma"]])
def test_diseased_eyes_are_left_alone_by_the_healthy_variants(conditions):
    assert np.array_equal(render_fundus(4, 160, conditions, V1).image, render_fundus(4, 160, conditions, VARIANTS_ONLY).image)


def test_camera_haze_is_never_drawn_on_a_cataract():
    haze_only = V1.with_layer(("camera_haze", {"p": 1.0}), before="defocus", name="haze-only")
    assert np.array_equal(render_fundus(5, 160, ["cataract"], V1).image, render_fundus(5, 160, ["cataract"], haze_only).image)
    assert not np.array_equal(render_fundus(5, 160, ["dr1"], V1).image, render_fundus(5, 160, ["dr1"], haze_only).image)


def test_the_foveal_reflex_is_brighter_than_the_fovea_around_it():
    import cv2
    r = render_fundus(6, 256, ["normal"], VARIANTS_ONLY)
    plain = render_fundus(6, 256, ["normal"], V1)
    diff = r.image.astype(int).sum(-1) - plain.image.astype(int).sum(-1)
    assert diff.max() > 20  # the reflex (and drusen) add light; nothing darkens
    assert np.percentile(diff, 1) >= -3
    assert cv2.countNonZero((diff > 20).astype(np.uint8)) < 0.01 * diff.size  # small features, not a wash


def test_is_healthy_reads_the_case_labels():
    assert is_healthy(sample_case(1, 64, [("normal", None)]))
    assert not is_healthy(sample_case(1, 64, [("dr", 2)]))
    assert not is_healthy(sample_case(1, 64, [("cataract", None)]))


def test_the_library_pipelines_do_not_draw_the_variants():
    for name in ("v1", "v2"):
        assert "normal_variants" not in PIPELINES[name].layer_names
        assert "camera_haze" not in PIPELINES[name].layer_names
