"""research/samples_curve.py: samples seen are step x batch x accumulation; only validation rows count."""
from __future__ import annotations

import json

from research import samples_curve


def test_curve_rows_count_samples_and_skip_loss_lines(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"batch_size": 32, "accum_steps": 2}))
    lines = [{"step": 10, "loss": 3.0}, {"step": 50, "val/synthetic_balanced_accuracy": 0.5,
                                          "eval/eyedisease_dev/balanced_accuracy": 0.41}]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(l) for l in lines))
    name, rows = samples_curve.load_run(run, "trial")
    assert name == "trial" and [r["samples"] for r in rows] == [50 * 64]
    text = samples_curve.table([(name, rows)])
    assert "| trial | 3,200 | 0.500 | 0.410 | - |" in text
    samples_curve.plot([(name, rows)], tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 1000


def test_a_folder_without_metrics_is_a_clear_error(tmp_path):
    import pytest
    with pytest.raises(SystemExit, match="has no metrics.jsonl"):
        samples_curve.load_run(tmp_path)
