"""The screening decision (normal versus a finding, then which condition) and its gauge."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from engine import PromptSet, VisionCLIPError, load_preset
from engine.resources import asset_dir
from engine.screening import (Screening, ScreeningRule, calibrate, calibrate_threshold, hierarchical_prediction,
                              rule_of, screen)
from engine.screening_metrics import (ScreeningScores, paired_mean_auc_difference, paired_screening_difference,
                                      screening_metrics)

CLASSES = {"normal": ["a healthy retina"], "diabetic retinopathy": ["microaneurysms"], "glaucoma": ["a large cup"]}


def rule_doc(**kw):
    return {"classes": CLASSES, "screening": {"normal": "normal", "exclude": ["glaucoma"], "thresholds": {"m": 0.3}, **kw}}


def test_a_rule_round_trips_through_json_and_changes_the_hash():
    ps = PromptSet.from_dict(rule_doc())
    assert ps.screening == ScreeningRule("normal", ("glaucoma",), {"m": 0.3})
    again = PromptSet.from_json_text(ps.to_json())
    assert again == ps and again.sha256 == ps.sha256
    assert ps.with_screening(None).sha256 != ps.sha256  # the rule decides predictions too


@pytest.mark.parametrize("screening, message", [
    ({"normal": "healthy"}, "lacks: healthy"),
    ({"exclude": ["cataract"]}, "lacks: cataract"),
    ({"exclude": ["normal"]}, "cannot exclude its own normal"),
    ({"thresholds": {"m": 1.5}}, "not a probability"),
    ({"thresholds": {"m": True}}, "not a probability"),
    ({"thresholds": [0.2]}, "must map model ids"),
    ({"exclude": "glaucoma"}, "must be a list"),
])
def test_a_broken_rule_is_a_one_line_error(screening, message):
    doc = {"classes": CLASSES, "screening": screening}
    with pytest.raises(VisionCLIPError, match=message):
        PromptSet.from_dict(doc)
    with pytest.raises(VisionCLIPError, match=message):
        PromptSet.from_json_text(json.dumps(doc))


def test_subset_keeps_the_rule_while_its_normal_class_stays():
    ps = PromptSet.from_dict(rule_doc())
    assert ps.subset({"normal", "diabetic retinopathy"}).screening.excluded == ()
    assert ps.subset({"diabetic retinopathy", "glaucoma"}).screening is None


def test_a_set_without_a_rule_screens_with_its_normal_class_and_a_set_without_normal_does_not():
    assert rule_of(PromptSet(CLASSES)) == ScreeningRule("normal")
    assert rule_of(PromptSet({"glaucoma": ["cup"], "cataract": ["haze"]})) is None


def test_calibrated_threshold_calls_the_asked_share_of_healthy_scores_normal():
    p = np.linspace(0, 1, 101)
    t = calibrate_threshold(p, specificity=0.8)
    assert np.mean(p < t) == pytest.approx(0.8, abs=0.01)
    with pytest.raises(VisionCLIPError):
        calibrate_threshold(np.array([]))
    with pytest.raises(VisionCLIPError):
        calibrate_threshold(p, specificity=1.0)


def test_hierarchical_prediction_names_a_condition_only_for_a_finding():
    probs = np.array([[0.6, 0.3, 0.1], [0.5, 0.1, 0.4], [0.1, 0.2, 0.7]])
    classes = list(CLASSES)
    s = Screening(np.array([0.1, 0.6, 0.9]), np.array([False, True, True]), 0.5, "normal")
    assert hierarchical_prediction(probs, classes, s) == ["normal", "glaucoma", "glaucoma"]
    assert hierarchical_prediction(probs, classes, None) == ["normal", "normal", "glaucoma"]


class FixedModel:
    """Embeddings that are one-hot class directions, so the scores are known."""

    model_id = "m"
    logit_scale = 10.0

    def probabilities(self, emb, ps):
        idx = [list(CLASSES).index(c) for c in ps.classes]
        return (self.logit_scale * emb[:, idx]).softmax(-1)


def test_excluded_classes_do_not_make_an_eye_abnormal_but_a_counted_one_does():
    ps = PromptSet.from_dict(rule_doc())
    emb = torch.tensor([[0.5, 0.0, 1.0], [0.0, 1.0, 0.0]])  # a glaucoma-looking eye, a DR-looking eye
    s = screen(FixedModel(), emb, ps)
    assert s.threshold == 0.3 and s.finding.tolist() == [False, True]
    assert s.p_abnormal[0] == pytest.approx(1 - torch.tensor([5.0, 0.0]).softmax(0)[0].item())
    uncalibrated = ps.with_screening(ScreeningRule("normal", ("glaucoma",)))  # no threshold for model m: top-1
    assert screen(FixedModel(), emb, uncalibrated).finding.tolist() == [True, True]
    assert screen(FixedModel(), emb, uncalibrated).threshold is None


def scores(labels, p, finding):
    return ScreeningScores(np.array(labels), np.array(p), np.array(finding))


def test_screening_metrics_count_what_they_say():
    s = scores(["normal"] * 4 + ["dr"] * 2 + ["amd"] * 2,
               [0.1, 0.2, 0.3, 0.9, 0.8, 0.7, 0.95, 0.05], [0, 0, 0, 1, 1, 1, 1, 0])
    m = screening_metrics(s, resamples=200)
    assert m["specificity"] == 0.75 and m["sensitivity"] == 0.75
    assert m["auc dr"] == pytest.approx(0.75) and m["auc amd"] == pytest.approx(0.5)
    assert m["n_healthy"] == 4 and m["n_diseased"] == 4
    lo, hi = m["ci95"]["specificity"]
    assert lo <= 0.75 <= hi


def test_the_gauge_needs_healthy_and_diseased_eyes():
    with pytest.raises(VisionCLIPError, match="healthy"):
        scores(["dr", "dr"], [0.1, 0.2], [0, 1])


def test_paired_difference_of_a_decision_with_itself_is_exactly_zero_and_a_better_one_is_positive():
    labels = ["normal"] * 20 + ["dr"] * 20
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 1, 40)  # a decision near chance
    a = scores(labels, p, p > 0.5)
    d = paired_screening_difference(a, a, resamples=100)
    assert d["auc"]["difference"] == 0 and d["auc"]["ci95"] == [0.0, 0.0]
    perfect = scores(labels, np.r_[np.zeros(20), np.ones(20)], np.r_[np.zeros(20), np.ones(20)])
    better = paired_mean_auc_difference([(a, perfect)], resamples=100)
    assert better["difference"] > 0 and better["ci95"][0] > 0


def test_the_shipped_screening_preset_is_calibrated_for_the_shipped_model(default_model):
    ps = load_preset("screening")
    assert default_model.model_id in ps.screening.thresholds
    assert "no real photograph" in ps.screening.calibration


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_shipped_model_screens_the_example_renders(default_model):
    ps = load_preset("screening")
    examples = sorted(asset_dir("examples").glob("synthetic_*.png"))
    emb = default_model.encode_images(examples)
    s = screen(default_model, emb, ps)
    decisions = {p.stem: s.decision(i) for i, p in enumerate(examples)}
    assert decisions["synthetic_normal_11"] == "normal"
    assert decisions["synthetic_dr_12"] == decisions["synthetic_amd_14"] == "finding"


def test_calibration_writes_this_models_threshold_from_healthy_renders(untrained_model):
    ps = calibrate(untrained_model, PromptSet(CLASSES), n=8, seed=5)
    t = ps.screening.thresholds[untrained_model.model_id]
    assert 0 < t < 1 and "8 healthy synthetic renders" in ps.screening.calibration


def test_cli_predict_leads_with_the_decision_and_eval_screening_prints_the_gauge(tmp_path, labelled_folder):
    from .test_cli import run_cli

    r = run_cli("predict", labelled_folder / "img", "--csv", tmp_path / "p.csv")
    assert r.returncode == 0, r.stderr
    first = r.stdout.splitlines()[0]
    assert "(P(abnormal) " in first and (": NORMAL" in first or ": FINDING" in first)
    header = (tmp_path / "p.csv").read_text().splitlines()[0].split(",")
    assert header[:3] == ["image", "screening", "p_abnormal"]

    r = run_cli("eval", "--data", labelled_folder, "--screening", "--json", "--bootstrap", "50")
    assert r.returncode == 0, r.stderr
    gauge = json.loads(r.stdout)
    assert gauge["n_healthy"] == 2 and gauge["n_diseased"] == 4
    assert {"specificity", "sensitivity", "auc", "auc glaucoma", "auc cataract"} <= set(gauge)


def test_cli_calibrate_writes_a_loadable_calibrated_set_and_refuses_bad_values(tmp_path):
    from .test_cli import run_cli

    out = tmp_path / "calibrated.json"
    r = run_cli("calibrate", "--prompts", "glaucoma", "--n", "10", "--out", out)
    assert r.returncode == 0, r.stderr
    ps = PromptSet.from_json(out)
    assert len(ps.screening.thresholds) == 1
    r = run_cli("calibrate", "--n", "3", "--out", out)
    assert r.returncode == 2 and r.stderr.strip().startswith("visionclip: error:") and len(r.stderr.strip().splitlines()) == 1
    r = run_cli("calibrate", "--specificity", "1.5", "--out", tmp_path / "x.json")
    assert r.returncode == 2 and "specificity" in r.stderr


def test_a_rule_that_excludes_every_condition_falls_back_to_top1_over_all_classes():
    ps = PromptSet({"normal": ["healthy"], "glaucoma": ["cup"]}, screening=ScreeningRule("normal", ("glaucoma",), {"m": 0.3}))
    emb = torch.tensor([[0.5, 0.0, 1.0]])
    s = screen(FixedModel(), emb, ps)
    assert s.threshold is None and s.finding.tolist() == [True]  # glaucoma is top-1
    assert 0 < s.p_abnormal[0] < 1
