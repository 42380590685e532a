"""research/pipelines.py: the trial renderer variants, registered by name when ``research`` is imported."""
import numpy as np
import pytest

import research.pipelines  # registers the trial pipelines
from engine.synth import render_fundus
from engine.synth.pipeline import PIPELINES


def test_importing_research_registers_the_trial_pipelines_beside_the_librarys_two():
    trial_names = {p.name for p in research.pipelines.TRIAL_PIPELINES}
    assert trial_names == {"v2-appearance", "v2-ppa-myopic", "v2-myopia-v1", "v1-v2disc", "v1-healthy", "v1-healthy-anatomy", "v1-wide-cups",
                           "v1-wide-cups-rim", "v1-rim", "v1-reflexes", "v1-small-lesions",
                           "v1-large-lesions", "v1-cup-vessels"}
    assert {name for name in PIPELINES if name not in trial_names} >= {"v1", "v2"}
    assert all(PIPELINES[p.name] is p for p in research.pipelines.TRIAL_PIPELINES)


def test_v2_ppa_myopic_keeps_atrophy_only_on_myopic_discs():
    """v2-ppa-myopic: v2 where only myopic and glaucomatous discs carry peripapillary atrophy."""
    v2, trial = PIPELINES["v2"], PIPELINES["v2-ppa-myopic"]
    disc = {name: dict(e[1]) for p in (v2, trial) for e in p.layers if not isinstance(e, str) and e[0] == "disc"
            for name in [p.name]}
    assert disc["v2-ppa-myopic"].pop("p_ppa_normal") == 0.0 and disc["v2"].pop("p_ppa_normal") > 0
    assert disc["v2-ppa-myopic"] == disc["v2"] and trial.case == v2.case
    ppa = {name: sum("peripapillary_atrophy" in render_fundus(s, 96, ["normal"], name).masks for s in range(30))
           for name in ("v2", "v2-ppa-myopic")}
    assert ppa["v2"] > 0 and ppa["v2-ppa-myopic"] == 0, ppa
    assert "peripapillary_atrophy" in render_fundus(0, 96, ["pathologic_myopia"], trial).masks


def test_v2_myopia_v1_sets_back_only_the_myopia_rules():
    """v2-myopia-v1: v2 with v1's choroid and healthy-disc rules; both overrides kept, nothing else changed."""
    v2, trial = PIPELINES["v2"], PIPELINES["v2-myopia-v1"]
    d2, dt = v2.layer_params("disc"), trial.layer_params("disc")
    assert dt.pop("ecc") == (0.88, 1.0) and dt.pop("p_ppa_normal") == 0.0
    d2.pop("ecc"), d2.pop("p_ppa_normal")
    assert dt == d2 and trial.case == v2.case
    assert trial.layer_params("choroid")["texture"] == 0.0 < v2.layer_params("choroid")["texture"]
    rest = [[e for e, n in zip(p.layers, p.layer_names) if n not in ("disc", "choroid")] for p in (v2, trial)]
    assert rest[0] == rest[1]
    # a myopic eye's tessellation does not depend on the texture rule: same pixels in both pipelines
    a, b = (render_fundus(3, 96, ["pathologic_myopia"], p).masks["tessellation"] for p in (v2, trial))
    assert np.array_equal(a, b)


def test_v1_v2disc_is_v1_with_only_the_disc_of_v2():
    """v1-v2disc: v1's layers and cases with v2's disc parameters; the other layers draw the same."""
    v1, v2, trial = PIPELINES["v1"], PIPELINES["v2"], PIPELINES["v1-v2disc"]
    assert trial.layer_params("disc") == v2.layer_params("disc")
    assert trial.layer_names == v1.layer_names and trial.case == v1.case
    a, b = (render_fundus(5, 128, ["normal"], p) for p in (v1, trial))
    # disc drawn differently (v2 sizes discs 0.7-1.0), same eye and field otherwise
    assert not np.array_equal(a.structures["optic_disc"], b.structures["optic_disc"])
    far = np.ones((128, 128), bool)
    ys, xs = np.nonzero(a.structures["optic_disc"])
    far[max(0, ys.min() - 40):ys.max() + 40, max(0, xs.min() - 40):xs.max() + 40] = False
    assert np.abs(a.image.astype(int) - b.image.astype(int))[far].mean() < 1.0


def test_v1_healthy_adds_the_healthy_variation_layers_to_v1_and_nothing_else():
    """v1-healthy: v1 plus normal_variants (before the lesions) and camera_haze (before defocus), wider normal cups."""
    v1, trial = PIPELINES["v1"], PIPELINES["v1-healthy"]
    names = list(trial.layer_names)
    assert [n for n in names if n not in ("normal_variants", "camera_haze")] == list(v1.layer_names)
    assert names.index("normal_variants") < names.index("lesion_composite")
    assert names.index("camera_haze") < names.index("defocus")
    assert trial.case.normal_cdr == (0.1, 0.6) and v1.case.normal_cdr != (0.1, 0.6)
    # a diseased eye carries no normal-variant layer output: its findings and masks match v1's
    a, b = (render_fundus(4, 96, ["diabetic_retinopathy"], p) for p in (v1, trial))
    assert sorted(a.masks) == sorted(b.masks)


def test_v1_wide_cups_changes_only_the_healthy_cup_range():
    """v1-wide-cups: v1's layers, and its case with healthy cup-to-disc 0.1-0.6 (trial 52)."""
    from dataclasses import replace

    v1, trial = PIPELINES["v1"], PIPELINES["v1-wide-cups"]
    assert trial.layers == v1.layers and trial.case.normal_cdr == (0.1, 0.6)
    assert replace(trial.case, normal_cdr=v1.case.normal_cdr) == v1.case


def test_rim_pipelines_draw_glaucoma_by_the_rim_and_leave_healthy_eyes_as_v1_does():
    """v1-rim and v1-wide-cups-rim (trials 53-54): v1 plus the rim-sign layer and a rim-shaped glaucomatous
    cup; only v1-wide-cups-rim widens the healthy cup range."""
    v1, rim, wide = PIPELINES["v1"], PIPELINES["v1-rim"], PIPELINES["v1-wide-cups-rim"]
    assert [e for e in rim.layer_names if e not in v1.layer_names] == ["glaucoma_signs"]
    assert rim.case == v1.case and wide.case.normal_cdr == (0.1, 0.6) and wide.layers == rim.layers
    assert rim.layer_params("disc")["glaucoma_cup_width"][1] < 1.0  # vertically elongated
    signs = {"rim_notch", "disc_haemorrhage", "rnfl_defect", "bayoneting"}
    drawn = [set(render_fundus(s, 96, ["glaucoma"], rim).masks) & signs for s in range(6)]
    assert sum(bool(d) for d in drawn) >= 5  # each sign is drawn with probability 0.4-0.8
    healthy = [render_fundus(s, 96, ["normal"], rim) for s in range(3)]
    assert not any(set(h.masks) & signs for h in healthy)
    assert all(np.array_equal(h.image, render_fundus(s, 96, ["normal"], v1).image) for s, h in enumerate(healthy))


def test_a_registered_pipeline_renders_in_the_writers_worker_processes(tmp_path):
    """Workers start fresh (forkserver) without research/ imported: they get the Pipeline, not its name."""
    from engine.synth import generate_dataset

    out = generate_dataset(tmp_path / "out", 2, size=64, workers=2, pipeline="v2-appearance", progress=False)
    assert (out / "labels.csv").read_text().count("2.0-v2-appearance") == 2


def test_v1_reflexes_adds_only_the_reflexes_and_fibres_to_healthy_eyes():
    """v1-reflexes (trial 55): v1 plus normal_variants without its small drusen; v1's cups, no haze."""
    v1, trial = PIPELINES["v1"], PIPELINES["v1-reflexes"]
    assert [n for n in trial.layer_names if n not in v1.layer_names] == ["normal_variants"]
    assert trial.case == v1.case and trial.layer_params("normal_variants")["p_drusen"] == 0.0
    healthy = [(render_fundus(s, 96, ["normal"], v1).image, render_fundus(s, 96, ["normal"], trial).image)
               for s in range(6)]
    assert any(not np.array_equal(a, b) for a, b in healthy)  # reflexes drawn on some healthy eyes
    a, b = (render_fundus(4, 96, ["diabetic_retinopathy"], p) for p in (v1, trial))
    assert np.array_equal(a.image, b.image)  # a diseased eye is drawn as v1 draws it


@pytest.mark.parametrize("name, smaller", [("v1-small-lesions", True), ("v1-large-lesions", False)])
def test_lesion_size_pipelines_redraw_the_small_dr_lesions_and_healthy_eyes_as_v1(name, smaller):
    """Trials 61 and 63: microaneurysms and exudates at 0.625 or 1.5 times v1's size; healthy eyes unchanged."""
    v1, trial = PIPELINES["v1"], PIPELINES[name]
    assert trial.layer_names == v1.layer_names and trial.case == v1.case
    area = {p.name: {k: 0 for k in ("microaneurysms", "hard_exudates")} for p in (v1, trial)}
    for p in (v1, trial):
        for seed in range(8):
            masks = render_fundus(seed, 320, ["diabetic_retinopathy"], p).masks
            for k in area[p.name]:
                area[p.name][k] += int(np.asarray(masks[k]).sum()) if k in masks else 0
    for k, total in area["v1"].items():
        ratio = area[name][k] / total
        assert (0 < ratio < 0.85) if smaller else (ratio > 1.5), (k, area)
    assert np.array_equal(render_fundus(2, 96, ["normal"], v1).image, render_fundus(2, 96, ["normal"], trial).image)


def test_v1_cup_vessels_is_v1_with_the_cup_vessels_before_the_composite():
    v1, trial = PIPELINES["v1"], PIPELINES["v1-cup-vessels"]
    names = trial.layer_names
    assert names.index("cup_vessels") == names.index("vessel_composite") - 1
    assert [n for n in names if n != "cup_vessels"] == v1.layer_names and trial.case == v1.case
