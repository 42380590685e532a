"""research/source_cues.py: global colour and exposure statistics find source differences, not disease."""
import csv

import numpy as np
from PIL import Image

from research import source_cues


def _folder(tmp_path, brightness_of, n=20, seed=0):
    """Disc-shaped 'photographs' whose brightness is drawn per label from brightness_of[label]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:64, :64]
    field = (yy - 32) ** 2 + (xx - 32) ** 2 < 30 ** 2
    rows = []
    for label, (lo, hi) in brightness_of.items():
        for i in range(n):
            img = np.zeros((64, 64, 3), np.uint8)
            img[field] = (np.array([200, 110, 60]) * rng.uniform(lo, hi) + rng.normal(0, 8, (field.sum(), 3))).clip(30, 255)
            name = f"{label}_{i}.png"
            Image.fromarray(img).save(tmp_path / name)
            rows.append((name, label))
    with (tmp_path / "labels.csv").open("w", newline="") as f:
        csv.writer(f).writerows([("path", "label"), *rows])
    return tmp_path


def test_classes_from_differently_exposed_sources_are_told_apart(tmp_path):
    r = source_cues.source_cue_accuracy(_folder(tmp_path, {"normal": (0.9, 1.0), "diabetic retinopathy": (0.4, 0.5)}))
    assert r["balanced_accuracy"] > 0.95 and r["n"] == 40
    assert np.array(r["confusion_matrix"]).sum() == 40


def test_classes_from_one_source_stay_near_chance(tmp_path):
    r = source_cues.source_cue_accuracy(_folder(tmp_path, {"normal": (0.5, 1.0), "glaucoma": (0.5, 1.0)}, n=80))
    assert r["balanced_accuracy"] < 0.65


def test_statistics_read_only_the_field_of_view(tmp_path):
    img = np.zeros((128, 128, 3), np.uint8)  # the statistics' own side: no resampling at the edges
    img[32:96, 32:96] = (200, 100, 50)
    Image.fromarray(img).save(tmp_path / "a.png")
    stats = source_cues.global_statistics(tmp_path / "a.png")
    assert np.allclose(stats[:3], [200 / 255, 100 / 255, 50 / 255], atol=0.02)  # the black surround is left out
    assert abs(stats[6] - 0.25) < 0.03  # the field's share of the frame
