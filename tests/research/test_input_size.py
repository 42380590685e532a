"""research/input_size.py: the gauge's AUCs with a model read at other input sizes."""
import numpy as np

from research import input_size


def test_at_size_changes_the_side_and_keeps_the_rest(default_model):
    t = input_size.at_size(default_model, 416)
    assert t.image_size == 416 and default_model.transform.image_size != 416
    assert t.colour_target == default_model.transform.colour_target
    assert np.array_equal(t._mean_hwc, default_model.transform._mean_hwc)
    assert np.array_equal(t._std_hwc, default_model.transform._std_hwc)
    assert default_model.encode_tensors([t(np.full((500, 500, 3), 90, np.uint8))]).shape[0] == 1


def test_folder_line_reports_conditions_grades_and_the_operating_point():
    labels = np.array(["normal"] * 4 + ["diabetic retinopathy"] * 4)
    grades = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    p = np.array([0.1, 0.2, 0.3, 0.6, 0.5, 0.7, 0.8, 0.9])
    line = input_size.folder_line(p, labels, grades, threshold=0.55)
    assert line.startswith("AUC 0.938")  # 15 of 16 pairs ordered
    assert "grade 1 0.875" in line  # 7 of 8 pairs and "grade 2 1.000" in line
    assert "specificity 0.750, sensitivity 0.750" in line


def test_calibrate_draws_the_healthy_renders_at_the_drawn_at_size(default_model, monkeypatch, tmp_path, capsys):
    """--drawn-at (trial 62): renders drawn at one size, read at each --sizes entry; no real folder needed."""
    import engine.screening
    import engine.synth.benchmark as benchmark

    drawn = []
    real_samples = benchmark.benchmark_samples

    def recording(n, seed, size, **kw):
        drawn.append(size)
        return real_samples(n, seed, size, **kw)

    monkeypatch.setattr(engine.screening, "CALIBRATION_IMAGES", 12)
    monkeypatch.setattr(benchmark, "benchmark_samples", recording)
    monkeypatch.setattr("engine.VisionCLIP.load", lambda *a, **k: default_model)
    input_size.main(["--sizes", "128", "160", "--calibrate", "--drawn-at", "96", "--eval-root", str(tmp_path)])
    out = capsys.readouterr().out
    assert drawn == [96, 96]
    assert "128 px: threshold from healthy renders drawn at 96 px" in out and "160 px: " in out
    assert default_model.transform.image_size not in (128, 160)  # the model's own side is put back
