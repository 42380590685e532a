"""Weight averaging (`visionclip average`): exact weighted means, honest metadata, one-line refusals."""
import json

import pytest
import torch

from engine import VisionCLIP
from engine.checkpoint import load_checkpoint, save_checkpoint
from engine.cli import main as cli
from engine.train.average import average_checkpoints

IMAGE_KEY = "visual.head.proj.weight"


def _part(untrained_model, path, shift, colour, sources, seen):
    """A copy of the untrained model with its image projection moved by ``shift``, saved as if trained."""
    state = {k: v.clone() for k, v in untrained_model.network.state_dict().items()}
    state[IMAGE_KEY] = state[IMAGE_KEY] + shift
    base = untrained_model.config
    config = {**base, "preprocess_cfg": {**base["preprocess_cfg"], "colour_target": colour}}
    meta = {k: v for k, v in untrained_model.metadata.items() if k != "model_id"}
    meta.update(trained=True, training_data={"real_patient_images": 0, "sources": sources, "synthetic_images_seen": seen})
    save_checkpoint(path, state, config, meta, lean=True)
    return IMAGE_KEY, state[IMAGE_KEY]


@pytest.fixture
def two_parts(tmp_path, untrained_model):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    key, ta = _part(untrained_model, a, 0.0, [0.5, 0.3, 0.2], ["renders v1"], 100)
    _, tb = _part(untrained_model, b, 1.0, [0.7, 0.5, 0.2], ["renders v2", "renders v1"], 300)
    return a, b, key, ta, tb


def test_average_is_the_weighted_mean_and_says_what_it_was_made_from(tmp_path, two_parts, capsys):
    a, b, key, ta, tb = two_parts
    out = tmp_path / "soup.safetensors"
    assert cli(["average", str(a), str(b), "--weights", "1", "3", "--out", str(out),
                "--selected-by", "held-out synthetic accuracy"]) == 0
    state, config, meta = load_checkpoint(out)
    assert torch.allclose(state[key], 0.25 * ta + 0.75 * tb, atol=1e-6)
    assert not torch.equal(state[key], ta) and not torch.equal(state[key], tb)
    assert config["preprocess_cfg"]["colour_target"] == [0.65, 0.45, 0.2]
    assert [p["weight"] for p in meta["averaged_from"]] == [0.25, 0.75]
    assert meta["training_data"]["real_patient_images"] == 0
    assert meta["training_data"]["sources"] == ["renders v1", "renders v2"]
    assert meta["training_data"]["synthetic_images_seen"] == 400
    assert meta["selected_by"] == "held-out synthetic accuracy"
    assert meta["model_id"] in capsys.readouterr().out
    model = VisionCLIP.load(out)  # loads like any other model
    assert model.is_trained and model.metadata["training_command"].startswith("visionclip average")


def test_equal_weights_by_default_and_order_does_not_matter(two_parts):
    a, b, key, ta, tb = two_parts
    s1, _, _ = average_checkpoints([a, b])
    s2, _, _ = average_checkpoints([b, a])
    assert torch.allclose(s1[key], 0.5 * (ta + tb), atol=1e-6) and torch.allclose(s1[key], s2[key], atol=1e-6)


@pytest.mark.parametrize("extra, message", [
    (["--weights", "1"], "1 weights for 2 models"),
    (["--weights", "1", "nan"], "weights must be >= 0"),
    (["--weights", "-1", "2"], "weights must be >= 0"),
    (["--weights", "0", "0"], "positive sum"),
])
def test_bad_weights_are_a_one_line_error(tmp_path, two_parts, capsys, extra, message):
    a, b, *_ = two_parts
    out = tmp_path / "soup.safetensors"
    assert cli(["average", str(a), str(b), "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and not out.exists()


def test_models_that_cannot_be_averaged_are_refused(tmp_path, two_parts, untrained_model, capsys):
    a, b, key, *_ = two_parts
    state, config, meta = load_checkpoint(b)
    other_input = tmp_path / "other_input.safetensors"  # fed at another size: another model
    save_checkpoint(other_input, state, {**config, "vision_cfg": {**config["vision_cfg"], "image_size": 448}},
                    {k: v for k, v in meta.items() if k != "model_id"})
    other_start = tmp_path / "other_start.safetensors"
    save_checkpoint(other_start, state, config, {**{k: v for k, v in meta.items() if k != "model_id"},
                                                 "initial_weights": {"image": "something else"}})
    unrecorded = tmp_path / "unrecorded.safetensors"
    save_checkpoint(unrecorded, state, config, {**{k: v for k, v in meta.items() if k != "model_id"}, "training_data": {}})
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [([str(a), str(other_input)], "another architecture or preprocessing than model 1 (vision_cfg)"),
             ([str(a), str(other_start)], "different initial weights"),
             ([str(a), str(unrecorded)], "does not record how many real patient images"),
             ([str(a)], "at least two models"),
             ([str(a), str(tmp_path / "missing.safetensors")], "not found"),
             ([str(a), str(empty)], "no .safetensors checkpoint in folder")]
    for models, message in cases:
        assert cli(["average", *models, "--out", str(tmp_path / "x.safetensors")]) == 2, models
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    assert cli(["average", str(a), str(b), "--out", str(tmp_path / "x.pt")]) == 2
    assert "must be a .safetensors file" in capsys.readouterr().err
    assert not (tmp_path / "x.safetensors").exists()
    assert json.loads(json.dumps(load_checkpoint(a)[2]))["training_data"]["sources"] == ["renders v1"]  # parts untouched
