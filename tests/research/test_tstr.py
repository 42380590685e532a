"""research/tstr.py: the train-on-synthetic-test-on-real probe (structure, caching, and that it can score high)."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from research import tstr


def _blobs(n_per_class, classes, dim=16, sep=6.0, seed=0):
    rng = np.random.default_rng(seed)
    X = np.concatenate([rng.normal(0, 1, (n_per_class, dim)) + sep * np.eye(dim)[i] for i in range(len(classes))])
    return X, np.repeat(np.arange(len(classes)), n_per_class)


def test_probe_on_separable_data_scores_high_and_reports_every_metric():
    classes = ["normal", "diabetic retinopathy", "glaucoma", "cataract"]
    X_train, y_train = _blobs(30, classes, seed=1)
    X_test, y_test = _blobs(20, classes, seed=2)
    r = tstr.fit_and_score(X_train, y_train, X_test, y_test, classes)
    assert r["balanced_accuracy"] > 0.95
    assert set(r["recall"]) == set(classes) and min(r["recall"].values()) > 0.9
    cm = np.array(r["confusion"])
    assert cm.shape == (4, 4) and cm.sum() == 80 and (cm.sum(1) == 20).all()
    assert np.trace(cm) == pytest.approx(r["balanced_accuracy"] * 80, abs=1)


def test_probe_that_learned_the_wrong_mapping_scores_low():
    # renders that teach the opposite of what real photographs show must score near zero, not high
    classes = ["normal", "pathologic myopia"]
    X_train, y_train = _blobs(30, classes, seed=1)
    X_test, y_test = _blobs(30, classes, seed=2)
    r = tstr.fit_and_score(X_train, 1 - y_train, X_test, y_test, classes, positive="pathologic myopia")
    assert r["balanced_accuracy"] < 0.1 and r["auc"] < 0.1
    assert np.array(r["confusion"])[0, 1] > 25  # true normals predicted pathologic myopia


def test_cross_validated_reference_probe_gives_auc_for_the_positive_class():
    classes = ["normal", "pathologic myopia"]
    X, y = _blobs(25, classes)
    r = tstr.cross_validated(X, y, classes, positive="pathologic myopia", folds=5)
    assert r["auc"] > 0.95 and r["balanced_accuracy"] > 0.9 and r["n"] == 50


def test_real_folder_rows_of_other_labels_are_skipped(tmp_path):
    (tmp_path / "labels.csv").write_text("path,label\na.png,normal\nb.png,amd\nc.png,Glaucoma\n")
    paths, y = tstr.read_real_folder(tmp_path, ["normal", "glaucoma"])
    assert [p.name for p in paths] == ["a.png", "c.png"] and y.tolist() == [0, 1]


def test_end_to_end_on_tiny_renders_and_a_fake_real_folder(tmp_path, monkeypatch, capsys):
    from engine.synth.render import render_fundus

    classes = ["normal", "pathologic myopia"]
    real = tmp_path / "real"
    real.mkdir()
    rows = []
    for i in range(6):
        label = classes[i % 2]
        img = render_fundus(seed=900 + i, size=64, conditions=["normal" if i % 2 == 0 else "pathologic_myopia"]).image
        Image.fromarray(img).save(real / f"{i}.png")
        rows.append(f"{i}.png,{label}")
    (real / "labels.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    monkeypatch.setitem(tstr.TASKS, "palm", {"folder": real, "classes": classes, "positive": "pathologic myopia"})
    cache = tmp_path / "cache"
    out = tmp_path / "r.json"
    argv = ["--tasks", "palm", "--n-per-class", "3", "--size", "64", "--feature-size", "64",
            "--cache-dir", str(cache), "--json", str(out), "--real-probe"]
    results = tstr.main(argv)
    assert len(list(cache.glob("*.npy"))) == 6  # one cached feature per real file
    saved = json.loads(out.read_text())
    assert saved["results"] == json.loads(json.dumps(results))
    r = saved["results"][0]
    assert r["n_synthetic"] == 6 and r["tstr"]["n"] == 6 and r["tstr"]["classes"] == classes
    assert np.array(r["tstr"]["confusion"]).sum() == 6 and 0 <= r["tstr"]["auc"] <= 1
    assert r["real_probe_cv5"]["n"] == 6 and 0 <= r["real_probe_cv5"]["auc"] <= 1
    printed = capsys.readouterr().out
    assert "TSTR" in printed and "confusion" in printed

    # second run: the real features come from the cache (the feature net never sees the real files)
    seen = []
    real_extract = tstr.extract_features
    monkeypatch.setattr(tstr, "extract_features", lambda net, tr, images, batch_size=32: seen.append(images) or real_extract(net, tr, images))
    tstr.main(argv)
    assert all(not isinstance(im, Path) for batch in seen for im in batch)


def test_disc_view_crops_round_the_optic_disc_by_one_rule_for_files_and_arrays(tmp_path):
    from ..conftest import make_fundus

    photo = make_fundus(size=(320, 240))  # pale disc right of centre, on an orange field with a black surround
    photo.save(tmp_path / "eye.png")
    tile = tstr.disc_view(tmp_path / "eye.png")
    side = tstr.DISC_VIEW["out_px"]
    assert tile.shape == (side, side, 3)
    centre = tile[side // 2 - 8:side // 2 + 8, side // 2 - 8:side // 2 + 8].mean(axis=(0, 1))
    assert centre[1] > 150 and centre[1] > tile.mean(axis=(0, 1))[1]  # the pale disc (G 200) fills the middle
    assert np.array_equal(tile, tstr.disc_view(np.asarray(photo)))  # a render (array) gets the same crop
    other = photo.transpose(Image.FLIP_LEFT_RIGHT)  # disc on the left now: the crop follows it
    mirrored = tstr.disc_view(np.asarray(other)).astype(int)
    assert np.abs(mirrored - tile[:, ::-1]).mean() < 5  # the same tile, mirrored (to a pixel at vessel edges)


def test_disc_view_features_are_cached_apart_from_whole_fundus_features(tmp_path):
    (tmp_path / "a.png").write_bytes(b"same bytes")
    keys = {tstr._file_key(tmp_path / "a.png", 224, view=v) for v in ("fundus", "disc")}
    assert len(keys) == 2
