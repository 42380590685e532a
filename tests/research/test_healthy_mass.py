"""research/healthy_mass.py: the screening softmax of a folder's healthy eyes, split by condition."""
import csv

import pytest
from PIL import Image

from engine import load_preset
from engine.synth import render_fundus
from research import healthy_mass


def _folder(tmp_path, n_healthy):
    rows = []
    for i in range(n_healthy):
        Image.fromarray(render_fundus(i, 128, ["normal"]).image).save(tmp_path / f"h{i}.png")
        rows.append((f"h{i}.png", "normal"))
    Image.fromarray(render_fundus(99, 128, ["diabetic_retinopathy"]).image).save(tmp_path / "d.png")
    rows.append(("d.png", "diabetic retinopathy"))
    with (tmp_path / "labels.csv").open("w", newline="") as f:
        csv.writer(f).writerows([("path", "label"), *rows])
    return tmp_path


def test_shares_cover_normal_and_the_counted_conditions_and_sum_to_one(default_model, tmp_path):
    prompts = load_preset("screening")
    shares = healthy_mass.healthy_shares(default_model, prompts, _folder(tmp_path, healthy_mass.MIN_HEALTHY))
    rule = prompts.screening
    assert set(shares) == {c for c in prompts.classes if c not in rule.excluded}
    assert sum(shares.values()) == pytest.approx(1.0, abs=1e-5)
    assert shares[rule.normal] > 0.5  # healthy renders read as healthy


def test_a_folder_with_few_healthy_eyes_is_skipped(default_model, tmp_path):
    assert healthy_mass.healthy_shares(default_model, load_preset("screening"), _folder(tmp_path, 3)) is None
