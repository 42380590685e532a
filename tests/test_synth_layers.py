"""Tests of the modular renderer: every layer, per-layer random streams, pipelines, versions."""
import time

import numpy as np
import pytest

from engine.errors import VisionCLIPError
from engine.synth import SyntheticFundusStream, build_caption, render_fundus
from engine.synth.layer import FINDING_WORDS, LAYERS, Layer, register
from engine.synth.pipeline import PIPELINES, Pipeline, get_pipeline, register_pipeline
from engine.synth.render import GENERATOR_VERSIONS, draw_layers

# a condition that makes each finding layer draw (at least for some seeds)
TRIGGER = {
    "choroid": "pathologic_myopia", "disc": "glaucoma", "microaneurysms": "dr1", "dot_blot_haemorrhages": "dr2",
    "flame_haemorrhages": "dr3", "hard_exudates": "dr2", "cotton_wool_spots": "dr3", "severe_npdr": "dr3",
    "proliferative_dr": "dr4", "laser_scars": "dr4", "macular_oedema": "dme", "amd": "amd",
    "myopic_maculopathy": "pathologic_myopia", "hypertensive_vessels": "hypertensive_retinopathy",
    "hypertensive_lesions": "hypertensive_retinopathy", "vein_occlusion": "rvo", "epiretinal_membrane": "erm",
    "csc": "csc", "glaucoma_signs": "glaucoma", "media_opacity": "cataract",
}
FINDING_LAYERS = sorted({name for p in PIPELINES.values() for name in
                         (e if isinstance(e, str) else e[0] for e in p.layers) if LAYERS[name].words})


def test_every_finding_layer_has_a_trigger_and_words():
    assert set(FINDING_LAYERS) == set(TRIGGER)
    for name in FINDING_LAYERS:
        for finding, words in LAYERS[name].words.items():
            assert words and FINDING_WORDS[finding], (name, finding)


@pytest.mark.parametrize("layer_name", FINDING_LAYERS)
def test_layer_mask_in_field_and_words_in_caption(layer_name):
    """Run the pipeline up to this layer: each finding it records has a non-empty mask that lies in the
    field of view, and the caption built from the render names it."""
    pipe = "v2"
    layer_findings = set(LAYERS[layer_name].words)
    fired = 0
    for seed in range(10):
        eye, canvas = draw_layers(seed, 128, [TRIGGER[layer_name]], pipe, stop_after=layer_name)
        mine = [f for f in canvas.findings if f["name"] in layer_findings]
        for f in mine:
            m = canvas.masks[f["name"]] > 0
            assert m.any(), (layer_name, f)
            # the layer draws inside the field (a lesion may touch the rim)
            assert (m & ~eye.fov).sum() <= 0.1 * m.sum() + 4, (layer_name, f["name"])
        if mine:
            fired += 1
            s = render_fundus(seed, 128, [TRIGGER[layer_name]], pipe)
            cap = build_caption(s.labels, s.findings, np.random.default_rng(seed)).lower()
            for f in s.findings:
                if f["name"] in layer_findings:
                    assert any(w.lower() in cap for w in FINDING_WORDS[f["name"]]), (f, cap)
    assert fired, f"layer {layer_name} drew no finding in 10 seeds"


def test_removing_a_layer_changes_no_other_layers_pixels():
    """Each layer has its own random stream: without "dust", sensor noise and everything else is
    unchanged, so only the dust spots differ (with one shared stream every pixel would change)."""
    base = PIPELINES["v1"].without("jpeg")
    changed = 0
    for seed in range(8):
        a = render_fundus(seed, 128, ["dr2"], base)
        b = render_fundus(seed, 128, ["dr2"], base.without("dust"))
        assert a.labels == b.labels and a.findings == b.findings
        assert all(np.array_equal(a.masks[k], b.masks[k]) for k in a.masks)
        diff = np.abs(a.image.astype(int) - b.image.astype(int)).max(axis=2) > 0
        assert diff.mean() < 0.05, f"seed {seed}: {diff.mean():.3f} of pixels changed"
        changed += diff.any()
    assert changed, "dust never drew in 8 seeds: the test would prove nothing"


def test_removing_a_finding_layer_keeps_other_findings():
    a = render_fundus(5, 128, ["dr3"], "v2")
    b = render_fundus(5, 128, ["dr3"], PIPELINES["v2"].without("microaneurysms"))
    assert "microaneurysms" in a.masks and "microaneurysms" not in b.masks
    assert [f for f in a.findings if f["name"] != "microaneurysms"] == b.findings
    for k in b.masks:
        assert np.array_equal(a.masks[k], b.masks[k]), k


@register
class _TestSpot(Layer):
    """A finding added in one small class, as a new findings/ module would."""
    name = "test_spot"
    words = {"test_spot": ["a test spot"]}

    def draw(self, eye, canvas, rng):
        x, y = eye.points(rng, 1)[0]
        px, py = eye.px(x, y)
        canvas.mask("test_spot")[int(py) - 2:int(py) + 2, int(px) - 2:int(px) + 2] = 1
        canvas.map("white")[int(py) - 2:int(py) + 2, int(px) - 2:int(px) + 2] = 1
        canvas.add_finding("test_spot", eye.location(x, y), "single")


def test_adding_a_layer_is_one_class():
    v1 = PIPELINES["v1"]
    i = v1.layers.index("lesion_composite")
    plus = Pipeline("plus", v1.layers[:i] + ["test_spot"] + v1.layers[i:], v1.case)
    a, b = render_fundus(3, 128, ["amd"]), render_fundus(3, 128, ["amd"], plus)
    assert "test_spot" in b.masks and "test_spot" in {f["name"] for f in b.findings}
    assert [f for f in b.findings if f["name"] != "test_spot"] == a.findings
    assert "a test spot" in build_caption(b.labels, b.findings, np.random.default_rng(0))


@pytest.mark.parametrize("pipeline", ["v1", "v2"])
def test_pipelines_deterministic_and_fast_at_several_sizes(pipeline):
    for size in (64, 128, 300, 512):
        t = time.perf_counter()
        a = render_fundus(11, size, None, pipeline)
        dt = time.perf_counter() - t
        b = render_fundus(11, size, None, pipeline)
        assert a.image.shape == (size, size, 3) and a.image.dtype == np.uint8
        assert np.array_equal(a.image, b.image) and a.findings == b.findings and a.labels == b.labels
        assert a.generator_version == GENERATOR_VERSIONS[pipeline] == f"2.0-{pipeline}"
        assert dt < 2.0, f"{pipeline} at {size} px took {dt:.2f} s"


def test_pipelines_differ_and_default_is_v1():
    assert render_fundus(2, 96).generator_version == "2.0-v1"
    a, b = render_fundus(2, 96, ["glaucoma"], "v1"), render_fundus(2, 96, ["glaucoma"], "v2")
    assert not np.array_equal(a.image, b.image)


def test_bad_pipeline_and_layer_parameters_are_clear_errors():
    with pytest.raises(VisionCLIPError, match="pipeline"):
        render_fundus(0, 64, None, "v9")
    with pytest.raises(VisionCLIPError, match="layer"):
        render_fundus(0, 64, None, ["background", "no_such_layer"])
    with pytest.raises(VisionCLIPError, match="parameter"):
        get_pipeline(Pipeline("bad", [("disc", {"no_such_param": 1})])).build()
    with pytest.raises(VisionCLIPError):
        SyntheticFundusStream(size=64, pipeline="v9")


def test_with_params_overrides_one_layer_and_keeps_its_other_settings():
    v2 = PIPELINES["v2"]
    variant = v2.with_params("disc", {"p_ppa_normal": 0.0}, name="no-ppa")
    disc = {p.name: p.layer_params("disc") for p in (v2, variant)}
    assert disc["no-ppa"].pop("p_ppa_normal") == 0.0 and disc["v2"].pop("p_ppa_normal") > 0
    assert disc["no-ppa"] == disc["v2"] and variant.case == v2.case
    ppa = sum("peripapillary_atrophy" in render_fundus(s, 96, ["normal"], variant).masks for s in range(30))
    assert ppa == 0
    with pytest.raises(VisionCLIPError, match="no layer 'dsic'"):
        v2.with_params("dsic", {"p_ppa_normal": 0.0}, name="typo")


def test_registered_pipelines_are_chosen_by_name_and_names_are_not_taken_twice():
    variant = register_pipeline(PIPELINES["v1"].without("jpeg"))
    try:
        assert get_pipeline(variant.name) is variant
        assert render_fundus(1, 64, None, variant.name).generator_version == f"2.0-{variant.name}"
        assert register_pipeline(variant) is variant  # the same pipeline again is harmless
        with pytest.raises(VisionCLIPError, match="already registered"):
            register_pipeline(PIPELINES["v2"].without("jpeg").with_params("disc", {}, name=variant.name))
    finally:
        PIPELINES.pop(variant.name)


def test_stream_samples_carry_the_generator_version():
    s = SyntheticFundusStream(seed=0, size=64, length=1, pipeline="v2").sample(0)
    assert s["generator_version"] == "2.0-v2"


def test_csc_renders_a_macular_detachment():
    s = render_fundus(4, 128, ["csc"], "v2")
    assert s.labels["is_crp"] == 1 and "serous_detachment" in s.masks
    assert "central serous chorioretinopathy" in build_caption(s.labels, s.findings, np.random.default_rng(1)).lower() \
        or "serous" in build_caption(s.labels, s.findings, np.random.default_rng(1)).lower()


def test_v2_glaucoma_is_the_cup_not_brightness():
    """v2: glaucomatous cups are larger than physiological ones, but the cup is not drawn paler."""
    from engine.synth.case import sample_case
    cdr = {c: [sample_case(s, 128, [(c, None)], PIPELINES["v2"].case).cdr for s in range(200)] for c in ("normal", "glaucoma")}
    assert min(cdr["glaucoma"]) >= 0.65 and max(cdr["normal"]) <= 0.6 and min(cdr["normal"]) < 0.15
    disc = LAYERS["disc"](**dict(PIPELINES["v2"].layers[PIPELINES["v2"].layers.index(
        next(e for e in PIPELINES["v2"].layers if not isinstance(e, str) and e[0] == "disc"))][1]))
    assert disc.p["cup_alpha"] == disc.p["glaucoma_cup_alpha"]


def test_training_config_chooses_the_pipeline():
    """A trial is a config entry: {"type": "synthetic", "pipeline": "v2"} renders v2, a bad name fails."""
    from engine.train.data import SyntheticSource
    from engine.train.params import config_from_dict

    config_from_dict({"sources": [{"type": "synthetic", "pipeline": "v2"}]})
    src = SyntheticSource(seed=0, size=64, pipeline="v2")
    assert src.stream.sample(0)["generator_version"] == "2.0-v2"
    with pytest.raises(VisionCLIPError, match="pipeline"):
        SyntheticSource(seed=0, size=64, pipeline="nope")


def test_synth_cli_pipeline_option(tmp_path):
    import argparse
    import csv

    from engine.synth.cli import add_arguments, run

    p = argparse.ArgumentParser()
    add_arguments(p)
    assert run(p.parse_args(["--out", str(tmp_path / "o"), "--n", "1", "--size", "64", "--pipeline", "v2",
                             "--conditions", "csc"])) == 0
    rows = list(csv.DictReader(open(tmp_path / "o" / "labels.csv")))
    assert len(rows) == 1 and "serous" in rows[0]["findings"]
    with pytest.raises(SystemExit):
        p.parse_args(["--out", "x", "--n", "1", "--pipeline", "v9"])


def test_cup_vessels_fade_the_vessels_inside_the_cup_and_leave_the_rest():
    """CupVessels (trial 66) changes the vessel maps inside the cup only: fainter there, identical outside
    the disc's box; the other layers' streams are untouched."""
    pipe = PIPELINES["v1"].with_layer("cup_vessels", before="vessel_composite", name="test-cup-vessels")
    for seed, cond in ((3, "normal"), (4, "glaucoma")):
        _, plain = draw_layers(seed, 320, [cond], "v1", stop_after="hypertensive_vessels")
        _, dived = draw_layers(seed, 320, [cond], pipe, stop_after="cup_vessels")
        cup = dived.structure("optic_cup")
        outside = np.ones_like(cup)
        outside[dived.state["disc"]["box"]] = False
        for name in ("vein", "artery"):
            assert np.array_equal(plain.maps[name][outside], dived.maps[name][outside]), (seed, name)
            assert dived.maps[name][cup].sum() < 0.8 * plain.maps[name][cup].sum(), (seed, name)
    assert not np.array_equal(render_fundus(4, 320, ["glaucoma"], "v1").image,
                              render_fundus(4, 320, ["glaucoma"], pipe).image)
