"""research/render_scorers.py: screening scores fitted on renders' embeddings."""
import numpy as np

from research import render_scorers


def test_every_scorer_ranks_what_it_was_fitted_to_separate():
    # two clusters on the unit sphere: the scores must put the "abnormal" one above the other
    rng = np.random.default_rng(0)
    healthy = rng.normal(0, 0.1, (60, 8)) + np.eye(8)[0]
    abnormal = rng.normal(0, 0.1, (60, 8)) + np.eye(8)[1]
    emb = np.concatenate([healthy, abnormal])
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    labels = np.repeat([0, 1], 60)
    scorers = render_scorers.fit_scorers(emb, labels)
    assert len(scorers) == 6
    for name, score in scorers.items():
        s = score(emb)
        assert s.shape == (120,)
        assert s[labels == 1].mean() > s[labels == 0].mean(), name


def test_real_folders_keep_only_folders_with_both_kinds(default_model, tmp_path):
    from PIL import Image

    from engine.synth import render_fundus

    for name, labels in (("both", ["normal", "cataract"]), ("healthy_only", ["normal", "normal"])):
        folder = tmp_path / name
        folder.mkdir()
        for i, label in enumerate(labels):
            Image.fromarray(render_fundus(i, 96, ["normal"]).image).save(folder / f"{i}.png")
        (folder / "labels.csv").write_text("path,label\n" + "".join(f"{i}.png,{l}\n" for i, l in enumerate(labels)))
    found = render_scorers.real_folders(default_model, tmp_path, min_eyes=1)
    assert render_scorers.real_folders(default_model, tmp_path, min_eyes=2) == {}
    assert list(found) == ["both"]
    emb, abnormal = found["both"]
    assert emb.shape[0] == 2 and abnormal.tolist() == [0, 1]
