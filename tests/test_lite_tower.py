"""The lite image tower (engine/lite_tower.py) against open_clip's: same weights, same embeddings, same
predictions; the whole network built on first use; a checkpoint that does not fit still one error line."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from engine import VisionCLIP, VisionCLIPError, load_preset
from engine import checkpoint as ckpt
from engine.factory import load_model_config
from engine.lite_tower import LiteImageNetwork, supports
from engine.resources import asset_dir, default_model_path

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = sorted(str(p) for p in asset_dir("examples").glob("*.png"))


@pytest.fixture(scope="module")
def lite():
    model = VisionCLIP.load()
    assert isinstance(model.image_network, LiteImageNetwork) and not model.network_built
    return model


@pytest.fixture(scope="module")
def full():
    model = VisionCLIP.load(lite=False)
    assert model.network_built and not isinstance(model.image_network, LiteImageNetwork)
    return model


@pytest.fixture(scope="module")
def renders():
    from engine.synth import render_fundus

    return [Image.fromarray(render_fundus(seed, 384, conditions).image)
            for seed, conditions in [(1, None), (2, ["glaucoma"]), (3, ["diabetic_retinopathy"])]]


def test_supports_only_the_default_image_tower():
    cfg = load_model_config("visionclip-effl0-minilm")
    assert supports(cfg)
    for change in ({"timm_model_name": "efficientnet_b0"}, {"timm_pool": ""}, {"timm_proj": "mlp"},
                   {"patch_dropout": 0.5}, {"some_new_option": 1}):
        assert not supports({**cfg, "vision_cfg": {**cfg["vision_cfg"], **change}}), change
    assert not supports({**cfg, "init_logit_bias": -10.0})
    assert not supports({**cfg, "cast_dtype": "fp16"})
    assert not supports({"embed_dim": 1024, "vision_cfg": {"layers": [3, 4, 6, 3], "width": 64}, "text_cfg": {}})
    with pytest.raises(ValueError):
        LiteImageNetwork({"embed_dim": 8, "vision_cfg": {"timm_model_name": "resnet50"}, "text_cfg": {}})


def test_same_embeddings_as_open_clip_on_renders_and_the_example_photographs(lite, full, renders):
    images = renders + EXAMPLES
    a, b = lite.encode_images(images), full.encode_images(images)
    assert a.shape == (len(images), full.config["embed_dim"])
    assert (a - b).abs().max().item() <= 1e-6
    assert lite.logit_scale == full.logit_scale
    with torch.inference_mode():  # the tower alone, unnormalised, in passes of several sizes
        x = torch.randn(3, 3, 320, 320).contiguous(memory_format=torch.channels_last)
        diff = (lite.image_network.encode_image(x) - full.network.encode_image(x)).abs().max().item()
    assert diff <= 1e-6
    assert not lite.network_built


def test_same_probabilities_as_open_clip(lite, full):
    preset = load_preset("screening")
    assert lite.classify(EXAMPLES, preset) == full.classify(EXAMPLES, preset)


def test_predict_json_is_unchanged(full, capsys):
    from engine.batch import predict_files
    from engine.cli import main

    assert main(["predict", *EXAMPLES, "--json"]) == 0  # loads the model as the CLI does: the lite tower
    printed = json.loads(capsys.readouterr().out)
    expected = list(predict_files(full, [Path(p) for p in EXAMPLES], load_preset("screening")))
    assert [r["probabilities"] for r in printed["results"]] == [r["probabilities"] for r in expected]
    assert [r["screening"] for r in printed["results"]] == [r["screening"] for r in expected]
    assert printed["model_id"] == full.model_id


def test_one_image_from_the_command_line_imports_no_open_clip(tmp_path):
    probe = ("import json, sys\nfrom engine.cli import main\nassert main(['predict', sys.argv[1]]) == 0\n"
             "print(json.dumps([m for m in ('open_clip', 'timm', 'transformers', 'torchvision', 'sklearn') if m in sys.modules]))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", probe, EXAMPLES[0]], capture_output=True, text=True, cwd=REPO,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_the_whole_network_is_built_on_first_use_with_ordinary_tensors():
    model = VisionCLIP.load()
    before = model.encode_images(EXAMPLES[:2])
    with torch.inference_mode():  # e.g. a prompt that is not stored, inside an inference-mode call
        model.encode_texts(["an unusual prompt that no preset holds"])
    assert model.network_built and not isinstance(model.image_network, LiteImageNetwork)
    params = list(model.network.parameters())
    assert not any(p.is_inference() for p in params) and all(p.requires_grad for p in params)
    assert torch.equal(model.encode_images(EXAMPLES[:2]), before)
    model.network.train()  # training and Grad-CAM use the whole network
    model.network.eval()


def test_the_lite_tower_is_for_inference_only(lite):
    with pytest.raises(RuntimeError, match="inference only"):
        lite.image_network.train()


def test_loading_leaves_the_callers_random_stream_alone():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    VisionCLIP.load()
    assert torch.equal(torch.rand(3), expected)


@pytest.fixture(scope="module")
def full_state():
    state, config, metadata = ckpt.load_checkpoint(default_model_path())  # the text tower restored
    metadata = {k: v for k, v in metadata.items() if k != "model_id"}
    return state, config, metadata


def _write(tmp_path, state, config, metadata, name="other.safetensors"):
    path = tmp_path / name
    ckpt.save_checkpoint(path, state, config, metadata)
    return path


@pytest.mark.parametrize("how", ["reshaped", "missing", "unexpected image key", "no text tower"])
def test_a_checkpoint_that_does_not_fit_is_one_error_line_at_load(tmp_path, full_state, how):
    state, config, metadata = full_state
    state = dict(state)
    if how == "reshaped":
        state["visual.head.proj.weight"] = torch.zeros(8, 1280)
    elif how == "missing":
        del state["visual.trunk.blocks.3.1.conv_dw.weight"]
    elif how == "unexpected image key":
        state["visual.trunk.extra.weight"] = torch.zeros(2)
    else:
        state = {k: v for k, v in state.items() if not k.startswith("text.")}
    path = _write(tmp_path, state, config, metadata)
    for lite in (True, False) if how == "reshaped" else (True,):  # the open_clip path: also tests/test_model.py
        with pytest.raises(VisionCLIPError, match="does not match its architecture") as err:
            VisionCLIP.load(path, lite=lite)
        assert "\n" not in str(err.value)


def test_a_text_side_mismatch_is_reported_when_the_whole_network_is_built(tmp_path, full_state):
    state, config, metadata = full_state
    path = _write(tmp_path, {**state, "text.bogus": torch.zeros(3)}, config, metadata)
    with pytest.raises(VisionCLIPError, match="does not match its architecture"):
        VisionCLIP.load(path, lite=False)
    model = VisionCLIP.load(path)  # the lite tower holds every image tensor, so scoring could go on
    with pytest.raises(VisionCLIPError, match="1 unexpected keys, e.g. text.bogus") as err:
        model.network
    assert "\n" not in str(err.value)
