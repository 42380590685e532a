import numpy as np
import pytest

from engine import VisionCLIPError, load_preset
from engine.evaluate import compute_metrics, evaluate, plot_confusion_matrix, read_labels


def test_metrics_known_values():
    y = ["a", "a", "b", "b"]
    probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.3, 0.7]])
    m = compute_metrics(y, probs, ["a", "b"])
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 1.0) / 2)
    assert m["confusion_matrix"] == [[1, 1], [0, 2]]
    assert m["auc"]["a"] == pytest.approx(1.0) and m["mean_auc"] == pytest.approx(1.0)


def test_quadratic_kappa_for_ordered_grades():
    y = ["g0", "g1", "g2", "g2"]
    probs = np.eye(3)[[0, 2, 2, 1]]
    plain = compute_metrics(y, probs, ["g0", "g1", "g2"])
    ordered = compute_metrics(y, probs, ["g0", "g1", "g2"], ordered=True)
    assert ordered["kappa_weights"] == "quadratic" and plain["kappa"] != ordered["kappa"]


def test_evaluate_folder_restricts_to_present_classes(untrained_model, labelled_folder, tmp_path):
    pred = tmp_path / "pred.csv"
    r = evaluate(untrained_model, labelled_folder, load_preset("screening"), predictions_csv=pred)
    assert set(r["classes"]) == {"normal", "glaucoma", "cataract"}
    for key in ("n", "classes", "accuracy", "balanced_accuracy", "macro_f1", "auc", "mean_auc", "kappa", "confusion_matrix"):
        assert key in r
    assert r["n"] == 6 and sum(map(sum, r["confusion_matrix"])) == 6
    assert len(pred.read_text().splitlines()) == 7
    full = evaluate(untrained_model, labelled_folder, load_preset("screening"), all_classes=True)
    assert len(full["classes"]) == 11
    fig = plot_confusion_matrix(r, tmp_path / "cm.png")
    assert (tmp_path / "cm.png").stat().st_size > 1000 and fig is not None


def test_bad_folders(tmp_path_factory, untrained_model, labelled_folder):
    tmp_path = tmp_path_factory.mktemp("bad")
    with pytest.raises(VisionCLIPError, match="no labels.csv"):
        read_labels(tmp_path)
    (tmp_path / "labels.csv").write_text("path,label\n")
    with pytest.raises(VisionCLIPError, match="lists no images"):
        read_labels(tmp_path)
    (tmp_path / "labels.csv").write_text("file,diagnosis\na.png,x\n")
    with pytest.raises(VisionCLIPError, match="path,label"):
        read_labels(tmp_path)
    (tmp_path / "labels.csv").write_text("path,label\na.png,normal\nb.png,normal\n")
    with pytest.raises(VisionCLIPError, match="missing: a.png, b.png"):
        read_labels(tmp_path)
    (labelled_folder / "labels.csv").write_text("path,label\nimg/0.png,macular hole\n")
    with pytest.raises(VisionCLIPError, match="macular hole"):
        evaluate(untrained_model, labelled_folder, load_preset("screening"))


def test_weighted_auc_matches_sklearn_on_the_repeated_sample_with_ties():
    from sklearn.metrics import roc_auc_score

    from engine.evaluate import _weighted_auc

    rng = np.random.default_rng(0)
    scores = np.round(rng.random(200), 1)  # many ties
    positive = rng.random(200) < 0.3
    counts = rng.integers(0, 4, 200)
    rep = np.repeat(np.arange(200), counts)
    got = _weighted_auc(scores, positive, np.stack([np.ones(200), counts.astype(float)]))
    assert got[0] == pytest.approx(roc_auc_score(positive, scores))
    assert got[1] == pytest.approx(roc_auc_score(positive[rep], scores[rep]))


def _noisy_predictions(n, seed=0):
    rng = np.random.default_rng(seed)
    y = np.array(["a", "b", "c"])[rng.integers(0, 3, n)]
    onehot = (y[:, None] == np.array(["a", "b", "c"])).astype(float)
    logits = 1.5 * onehot + rng.normal(size=(n, 3))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return list(y), probs


def test_bootstrap_intervals_hold_the_estimate_and_narrow_with_more_images():
    from engine.evaluate import bootstrap_intervals

    y, probs = _noisy_predictions(120)
    point = compute_metrics(y, probs, ["a", "b", "c"])
    small = bootstrap_intervals(y, probs, ["a", "b", "c"], resamples=500)
    for key in ("balanced_accuracy", "mean_auc"):
        lo, hi = small[key]
        assert lo < point[key] < hi and hi - lo > 0.02
    y4, probs4 = _noisy_predictions(1920, seed=1)
    large = bootstrap_intervals(y4, probs4, ["a", "b", "c"], resamples=500)
    width = lambda ci: ci[1] - ci[0]  # noqa: E731
    assert width(large["balanced_accuracy"]) < width(small["balanced_accuracy"]) / 2
    assert bootstrap_intervals(y, probs, ["a", "b", "c"], resamples=200) == bootstrap_intervals(y, probs, ["a", "b", "c"], resamples=200)


@pytest.mark.parametrize("bad", [-1, 2.5, "many", True])
def test_evaluate_refuses_a_bad_resample_count_before_any_work(untrained_model, labelled_folder, bad):
    with pytest.raises(VisionCLIPError, match="bootstrap must be a whole number"):
        evaluate(untrained_model, labelled_folder, load_preset("screening"), bootstrap=bad)


def test_evaluate_reports_bootstrap_intervals(untrained_model, labelled_folder):
    r = evaluate(untrained_model, labelled_folder, load_preset("screening"), bootstrap=200)
    assert r["bootstrap_resamples"] == 200
    lo, hi = r["ci95"]["balanced_accuracy"]
    assert 0 <= lo <= r["balanced_accuracy"] <= hi <= 1
    assert "ci95" not in evaluate(untrained_model, labelled_folder, load_preset("screening"))


def test_paired_difference_of_prompt_sets():
    from engine.evaluate import paired_bootstrap_difference

    rng = np.random.default_rng(0)
    labels = list(np.array(["a", "b"])[rng.integers(0, 2, 300)])
    a = rng.random(300) < 0.6
    same = paired_bootstrap_difference(labels, a, a, resamples=300)
    assert same["balanced_accuracy_difference"] == 0 and same["ci95"] == [0.0, 0.0]
    b = a | (rng.random(300) < 0.3)  # B right wherever A is, and on some more images
    better = paired_bootstrap_difference(labels, a, b, resamples=300)
    assert better["balanced_accuracy_difference"] > 0 and better["ci95"][0] > 0
    with pytest.raises(VisionCLIPError, match="same images"):
        paired_bootstrap_difference(labels, a, b[:10])


def test_evaluate_on_images_encoded_once(untrained_model, default_model, labelled_folder):
    from engine.evaluate import embed_folder

    folder = embed_folder(untrained_model, labelled_folder)
    direct = evaluate(untrained_model, labelled_folder, load_preset("screening"))
    assert evaluate(untrained_model, folder, load_preset("screening"))["confusion_matrix"] == direct["confusion_matrix"]
    other = evaluate(untrained_model, folder, load_preset("eyedisease"))  # another prompt set, no re-encoding
    assert other["n"] == 6 and set(other["classes"]) == {"normal", "glaucoma", "cataract"}
    with pytest.raises(VisionCLIPError, match="encoded by"):
        evaluate(default_model, folder, load_preset("screening"))


def test_compare_results_scores_two_evaluations_image_by_image():
    from engine.evaluate import compare_results

    labels = ["a", "a", "b", "b", "b", "a"]
    first = {"per_image": {"label": labels, "predicted": ["a", "b", "b", "a", "a", "a"]}}   # recall a 2/3, b 1/3
    second = {"per_image": {"label": labels, "predicted": ["a", "a", "b", "b", "a", "a"]}}  # recall a 1, b 2/3
    d = compare_results(first, second, resamples=200)
    assert d["balanced_accuracy_difference"] == pytest.approx(1 / 3)
    assert compare_results(second, first, resamples=200)["balanced_accuracy_difference"] == pytest.approx(-1 / 3)
