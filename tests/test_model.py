import pytest
import torch

from engine import PromptSet, VisionCLIP, VisionCLIPError, load_preset
from engine.checkpoint import read_header

from .conftest import make_fundus


def test_classify_returns_probabilities_per_class(default_model, fundus_image):
    ps = load_preset("screening")
    (probs,) = default_model.classify([fundus_image], ps)
    assert list(probs) == ps.classes
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-5)
    assert all(0.0 <= p <= 1.0 for p in probs.values())


def test_encodings_are_normalised(default_model, fundus_image):
    img = default_model.encode_images([fundus_image, make_fundus(seed=3)])
    txt = default_model.encode_texts(["glaucoma", "cataract"])
    assert img.shape[0] == 2 and txt.shape == (2, img.shape[1])
    assert torch.allclose(img.norm(dim=-1), torch.ones(2), atol=1e-4)
    assert torch.allclose(txt.norm(dim=-1), torch.ones(2), atol=1e-4)


def test_editing_one_prompt_reencodes_only_that_prompt(untrained_model, fundus_image):
    m = untrained_model
    ps = PromptSet({"normal": ["a healthy retina", "normal fundus"], "glaucoma": ["cupped disc"]})
    m.classify([fundus_image], ps)
    before = m.text_encodings
    m.classify([fundus_image], ps)
    assert m.text_encodings == before  # nothing re-encoded
    edited = PromptSet({"normal": ["a healthy retina", "normal fundus"], "glaucoma": ["cupped optic disc"]})
    m.classify([fundus_image], edited)
    assert m.text_encodings == before + 1


def test_class_embedding_is_renormalised_mean(untrained_model):
    ps = PromptSet({"a": ["one text", "another text"]})
    e = untrained_model.class_embeddings(ps)[0]
    t = untrained_model.encode_texts(ps["a"]).mean(0)
    assert torch.allclose(e, t / t.norm(), atol=1e-5)


def test_class_with_subclasses_gets_the_sum_of_their_probabilities(untrained_model, fundus_image):
    grouped = PromptSet({"normal": ["a healthy retina"],
                         "vascular": {"dr": ["microaneurysms", "exudates"], "hr": ["arteriolar narrowing"]},
                         "glaucoma": ["cupped disc"]})
    each = PromptSet({"normal": ["a healthy retina"], "dr": ["microaneurysms", "exudates"],
                      "hr": ["arteriolar narrowing"], "glaucoma": ["cupped disc"]})
    emb = untrained_model.encode_images([fundus_image, make_fundus(seed=5)])
    p_grouped = untrained_model.probabilities(emb, grouped)
    p_each = untrained_model.probabilities(emb, each)
    assert p_grouped.shape == (2, 3)
    expected = torch.stack([p_each[:, 0], p_each[:, 1] + p_each[:, 2], p_each[:, 3]], dim=1)
    assert torch.allclose(p_grouped, expected, atol=1e-6)
    assert torch.allclose(untrained_model.subclass_probabilities(emb, grouped), p_each, atol=1e-6)
    # not the same as one averaged embedding per class
    flat = untrained_model.probabilities(emb, PromptSet({c: grouped[c] for c in grouped.classes}))
    assert not torch.allclose(p_grouped, flat, atol=1e-4)


def test_long_prompt_truncated_with_warning(untrained_model):
    with pytest.warns(UserWarning, match="truncated"):
        untrained_model.encode_texts(["haemorrhage " * 200])


def test_untrained_fallback_is_labelled(untrained_model):
    assert untrained_model.model_id.startswith("untrained-")
    assert not untrained_model.is_trained
    assert VisionCLIP.from_config().model_id == untrained_model.model_id  # deterministic


def test_safetensors_round_trip(tmp_path, untrained_model, fundus_image):
    path = tmp_path / "m.safetensors"
    model_id = untrained_model.save(path, metadata={"trained": True, "note": "test"})
    header = read_header(path)
    assert header["format"] == "visionclip/1" and "config" in header
    loaded = VisionCLIP.load(path)
    assert loaded.model_id == model_id and loaded.metadata["note"] == "test"
    ps = load_preset("glaucoma")
    a = untrained_model.classify([fundus_image], ps)[0]
    b = loaded.classify([fundus_image], ps)[0]
    assert a == pytest.approx(b, abs=1e-5)


def test_same_weights_with_other_preprocessing_get_another_model_id(tmp_path, untrained_model):
    import copy

    plain = untrained_model.save(tmp_path / "a.safetensors")
    config = copy.deepcopy(untrained_model.config)
    config.setdefault("preprocess_cfg", {})["colour_target"] = [0.55, 0.35, 0.2]
    recoloured = VisionCLIP(untrained_model.network, config, dict(untrained_model.metadata)).save(tmp_path / "b.safetensors")
    assert plain != recoloured
    assert VisionCLIP.load(tmp_path / "b.safetensors").transform.colour_target == (0.55, 0.35, 0.2)


def test_pickle_checkpoint_refused_without_trust(tmp_path, untrained_model):
    path = tmp_path / "weights.pt"
    torch.save(untrained_model.network.state_dict(), path)
    with pytest.raises(VisionCLIPError, match="pickle"):
        VisionCLIP.load(path)
    loaded = VisionCLIP.load(path, trust_pickle=True)
    assert loaded.model_id


def test_unknown_and_broken_model_paths(tmp_path):
    with pytest.raises(VisionCLIPError, match="not found"):
        VisionCLIP.load(tmp_path / "nope.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"garbage" * 10)
    with pytest.raises(VisionCLIPError, match="not a readable"):
        VisionCLIP.load(bad)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(VisionCLIPError, match="no .safetensors"):
        VisionCLIP.load(empty)


def test_checkpoint_from_another_architecture(tmp_path):
    from engine.checkpoint import save_checkpoint
    from engine.factory import load_model_config

    path = tmp_path / "other.safetensors"
    save_checkpoint(path, {"foo.weight": torch.zeros(2, 2)}, load_model_config("visionclip-effl0-minilm"), {"config_name": "x"})
    with pytest.raises(VisionCLIPError, match="does not match"):
        VisionCLIP.load(path)


def test_unavailable_device():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(VisionCLIPError, match="no CUDA"):
        VisionCLIP.from_config(device="cuda")
