"""The clap-stage adapter: CLAP's residual over the tower's mid-level features (engine/adapt/stage.py)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from engine import PromptSet, VisionCLIPError
from engine.adapt import Adapter, TextAnchor, encode_for, make_head
from engine.adapt.stage import StageFeatures, encode_with_stage
from tests.conftest import make_fundus
from tests.test_adapt import tiny_model  # noqa: F401  (fixture: a tiny ViT model)

CLASSES = ["normal", "glaucoma", "cataract"]
THREE = PromptSet.from_dict({"name": "three", "classes": {c: [f"a fundus photograph of {c}"] for c in CLASSES}})


@pytest.fixture(scope="module")
def images():
    return [make_fundus(seed=s) for s in range(6)]


@pytest.fixture(scope="module")
def features(default_model, images):
    return encode_with_stage(default_model, images)


def test_stage_features_are_the_embedding_and_the_pooled_blocks(default_model, images, features):
    d = default_model.encode_images(images[:1]).shape[1]
    torch.testing.assert_close(features[:, :d], default_model.encode_images(images), atol=1e-4, rtol=1e-4)
    pooled = {4: [], 5: []}
    hooks = [default_model.network.visual.trunk.blocks[b].register_forward_hook(
        lambda _m, _i, out, b=b: pooled[b].append(out.mean((2, 3)))) for b in pooled]
    try:
        default_model.encode_images(images)
    finally:
        for h in hooks:
            h.remove()
    assert features.shape[1] == d + 112 + 192  # [embedding | block 4 | block 5], the default stages
    # one hook call per network pass: the CPU runs a batch in passes of a few images
    torch.testing.assert_close(features[:, d:], torch.cat([torch.cat(pooled[4]), torch.cat(pooled[5])], 1),
                               atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(encode_for(default_model, images, "clap-stage"), features)
    assert encode_for(default_model, images, "clap").shape[1] == d
    one = encode_with_stage(default_model, images, stages=[5])
    torch.testing.assert_close(one, torch.cat([features[:, :d], features[:, d + 112:]], 1), atol=1e-4, rtol=1e-4)
    with pytest.raises(VisionCLIPError, match="stage 9 is not a block"):
        StageFeatures(default_model.network, [5, 9])
    with pytest.raises(VisionCLIPError, match="must be block indices"):
        make_head("clap-stage", stages="x5")


def _toy(anchor: TextAnchor, n=40, f=24, seed=0):
    """Embeddings on which zero-shot always says class 0, and stage features that separate the classes."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(anchor.n_classes), n)
    emb = anchor.embeddings[anchor.owner == 0][0].numpy()[None].repeat(len(y), 0) + 0.01 * rng.normal(size=(len(y), anchor.embeddings.shape[1]))
    stage = rng.normal(size=(len(y), f)) + 3.0 * np.eye(anchor.n_classes, f)[y]
    return torch.as_tensor(np.concatenate([emb, stage], 1)).float(), y


def test_clap_stage_starts_at_zero_shot_and_learns_from_the_stage(default_model):
    anchor = TextAnchor.from_model(default_model, THREE)
    x, y = _toy(anchor)
    d = anchor.embeddings.shape[1]
    zero_shot = anchor.log_probs(torch.nn.functional.normalize(x[:, :d], dim=-1)).softmax(-1)
    assert (zero_shot.argmax(1).numpy() == 0).all()
    frozen = make_head("clap-stage", strength=1e6, shots_power=0.0).fit(x, y, anchor)  # held at the text: zero-shot exactly
    torch.testing.assert_close(frozen.predict_proba(x), zero_shot, atol=1e-4, rtol=1e-4)
    support = np.concatenate([np.flatnonzero(y == c)[:8] for c in range(3)])
    head = make_head("clap-stage").fit(x[support], y[support], anchor)
    accuracy = (head.predict_proba(x).argmax(1).numpy() == y).mean()
    assert accuracy > 0.7  # zero-shot: 1/3
    one_shot = make_head("clap-stage").fit(x[support[::8]], y[support[::8]], anchor)
    # one shot per class moves the head less than eight: held nearer the text by the shots-dependent penalty
    assert one_shot.state["residual"].norm() < 0.5 * head.state["residual"].norm()
    with pytest.raises(VisionCLIPError, match="wider than"):
        head.predict_proba(x[:, :d])  # plain embeddings: a one-line error, not a shape crash


def test_clap_stage_adapter_file_records_its_features(tmp_path, default_model, images, features):
    labels = [CLASSES[i % 3] for i in range(6)]
    adapter = Adapter.fit(default_model, features, labels, THREE, method="clap-stage", provenance={"source": "test"})
    path = adapter.save(tmp_path / "stage.safetensors")
    back = Adapter.load(path, default_model)
    assert back.method == "clap-stage" and back.image_features == "embedding+stage4+stage5"
    assert back.describe()["image_features"] == "embedding+stage4+stage5"
    torch.testing.assert_close(back.probabilities(back.encode(default_model, images)), adapter.probabilities(features))
    from safetensors.torch import load_file, save_file

    from engine.checkpoint import read_header
    header = read_header(path)
    header["image_features"] = "embedding"
    save_file(load_file(str(path)), str(tmp_path / "edited.safetensors"), metadata=header)
    with pytest.raises(VisionCLIPError, match="reads embedding"):
        Adapter.load(tmp_path / "edited.safetensors", default_model)
    tensors = load_file(str(path))
    tensors["head.centre"] = tensors["head.centre"][:10]
    save_file(tensors, str(tmp_path / "cut.safetensors"), metadata=read_header(path))
    with pytest.raises(VisionCLIPError, match="tensors are damaged"):
        Adapter.load(tmp_path / "cut.safetensors", default_model)


def test_a_single_stage_adapter_file_still_loads(tmp_path, default_model, images, features):
    """Files written when clap-stage read block 5 alone ({"stage": 5}) load and read that layout."""
    from safetensors.torch import load_file, save_file

    from engine.checkpoint import read_header

    d = default_model.encode_images(images[:1]).shape[1]
    single = torch.cat([features[:, :d], features[:, d + 112:]], 1)
    labels = [CLASSES[i % 3] for i in range(6)]
    adapter = Adapter.fit(default_model, single, labels, THREE, method="clap-stage", stages=[5])
    path = adapter.save(tmp_path / "one.safetensors")
    header = read_header(path)
    params = json.loads(header["params"])
    params["stage"] = params.pop("stages")[0]
    header.update(params=json.dumps(params), image_features="embedding+stage5")
    save_file(load_file(str(path)), str(tmp_path / "old.safetensors"), metadata=header)
    old = Adapter.load(tmp_path / "old.safetensors", default_model)
    assert old.image_features == "embedding+stage5" and old.head.stages == (5,)
    torch.testing.assert_close(old.probabilities(old.encode(default_model, images)), adapter.probabilities(single),
                               atol=1e-4, rtol=1e-4)


def test_clap_stage_needs_an_efficientnet_like_tower():
    with pytest.raises(VisionCLIPError, match="EfficientNet-like"):
        StageFeatures(torch.nn.Linear(2, 2))


def test_grad_cam_explains_the_stage_adapters_score(default_model, images, features):
    from engine.saliency import explain

    labels = [CLASSES[i % 3] for i in range(6)]
    adapter = Adapter.fit(default_model, features, labels, THREE, method="clap-stage", strength=1e-3)
    res = explain(default_model, images[0], THREE, "glaucoma", adapter=adapter)
    assert res.target == "adapter" and np.isfinite(res.map).all() and res.map.max() > 0
    assert res.probabilities == pytest.approx(dict(zip(CLASSES, adapter.probabilities(features[:1])[0].tolist())),
                                              abs=1e-4)
    # the map follows the stage path: the same adapter with its residual zeroed (zero-shot) maps elsewhere
    flat = Adapter.fit(default_model, features, labels, THREE, method="clap-stage", strength=1e-3)
    flat.head.state["residual"] = torch.zeros_like(flat.head.state["residual"])
    res_flat = explain(default_model, images[0], THREE, "glaucoma", adapter=flat)
    assert not np.allclose(res.input_map, res_flat.input_map, atol=1e-3)
    assert json.dumps(res.probabilities)  # plain floats


def test_default_method_is_clap_stage_where_the_tower_allows(default_model, tiny_model):
    from engine.adapt import default_method

    assert default_method(default_model) == "clap-stage"
    assert default_method(tiny_model) == "clap"  # a ViT has no such stage: the embedding-only clap


def test_cli_fits_and_uses_a_clap_stage_adapter_by_default(tmp_path, capsys, labelled_folder):
    from engine.cli import main

    def run(*argv):
        code = main([str(a) for a in argv])
        out = capsys.readouterr()
        return code, out.out, out.err

    three = tmp_path / "three.json"
    THREE.save(three)
    out = tmp_path / "mine.safetensors"
    code, stdout, err = run("adapt", "--data", labelled_folder, "--prompts", three, "--out", out)
    assert code == 0 and "clap-stage adapter" in stdout, err
    assert Adapter.load(out).image_features == "embedding+stage4+stage5"
    images = sorted((labelled_folder / "img").glob("*.png"))
    code, stdout, err = run("predict", *images[:3], "--adapter", out, "--json")
    doc = json.loads(stdout)
    assert code == 0 and doc["adapter"]["method"] == "clap-stage" and len(doc["results"]) == 3, err
    code, stdout, err = run("eval", "--data", labelled_folder, "--adapter", out, "--bootstrap", "0", "--json")
    assert code == 0 and json.loads(stdout)["adapter"]["image_features"] == "embedding+stage4+stage5", err
