import json

import numpy as np
import pytest
import torch
from PIL import Image

from engine import VisionCLIPError, create_model, list_model_configs
from engine.factory import load_model_config, preprocess_settings


def imagenet_top3(model, config: dict, picture: np.ndarray) -> list[int]:
    """Top-3 ImageNet classes of the remapped image trunk with its original classifier head (the last two
    tensors of the file ``config``'s ``initial_weights`` names)."""
    import timm

    from engine.factory import resolve_package_path

    trunk = model.visual.trunk
    source = torch.load(resolve_package_path(config["initial_weights"]["image"]), map_location="cpu", weights_only=True)
    full = timm.create_model(config["vision_cfg"]["timm_model_name"])
    state = {k: v for k, v in trunk.state_dict().items()}
    # The head is the file's last two tensors (classifier weight, bias).
    state["classifier.weight"], state["classifier.bias"] = list(source.values())[-2:]
    full.load_state_dict(state)
    full.eval()
    img = Image.fromarray(picture).resize((256, 256), Image.BICUBIC).crop((16, 16, 240, 240))
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    with torch.no_grad():
        logits = full(((x - mean) / std).unsqueeze(0))
    return logits.topk(3).indices[0].tolist()


def test_imagenet_weights_remap_onto_timm_trunk():
    skimage_data = pytest.importorskip("skimage.data")
    model, config = create_model()
    assert 285 in imagenet_top3(model, config, skimage_data.chelsea())  # Egyptian cat
    assert 967 in imagenet_top3(model, config, skimage_data.coffee())  # espresso


def test_default_config_is_efficientnet_and_minilm():
    cfg = load_model_config("visionclip-effl0-minilm")
    assert cfg["vision_cfg"]["timm_model_name"] == "efficientnet_lite0"
    assert cfg["text_cfg"]["hf_pooler_type"] == "mean_pooler"
    # preprocessing follows the config it is given (the shipped model's config says 320, this JSON 224)
    cfg["vision_cfg"]["image_size"] = 288
    assert preprocess_settings(cfg)["image_size"] == 288


def test_open_clip_builtin_architecture_from_scratch():
    assert "RN50" in list_model_configs()
    model, cfg = create_model("RN50", pretrained_towers=False)
    assert type(model).__name__ == "CLIP"
    with torch.no_grad():
        assert model.encode_image(torch.randn(1, 3, 224, 224)).shape == (1, cfg["embed_dim"])


def test_unknown_model_name_is_clear_error():
    with pytest.raises(VisionCLIPError, match="unknown model"):
        create_model("no-such-architecture")


def test_broken_config_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(VisionCLIPError, match="not valid JSON"):
        create_model(str(bad))
    incomplete = tmp_path / "incomplete.json"
    incomplete.write_text(json.dumps({"embed_dim": 8}))
    with pytest.raises(VisionCLIPError, match="vision_cfg"):
        create_model(str(incomplete))


@pytest.mark.parametrize("target", ["orange", [0.5, 0.4], [0.5, 0.4, 2.0]])
def test_bad_colour_target_in_a_model_config_is_one_clear_error(target):
    cfg = load_model_config("visionclip-effl0-minilm")
    cfg["preprocess_cfg"]["colour_target"] = target
    with pytest.raises(VisionCLIPError, match="colour_target must be 3 numbers"):
        preprocess_settings(cfg)
