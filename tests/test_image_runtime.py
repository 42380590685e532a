"""The frozen image tower (engine.image_runtime) against the eager one, the reference."""
import pytest
import torch

from engine import VisionCLIPError, load_preset
from engine.batch import predict_files
from engine.image_runtime import FROZEN_MIN_IMAGES, wants_frozen
from engine.resources import asset_dir

from .conftest import make_fundus


def test_frozen_tower_gives_the_eager_probabilities_on_renders_and_photographs(default_model):
    images = [*sorted(asset_dir("examples").glob("*.png")), *[make_fundus(seed=s, size=(400, 300)) for s in range(3)]]
    prompts = load_preset("screening")
    eager = default_model.probabilities(default_model.encode_images(images), prompts)
    default_model.image_runtime = "frozen"
    try:
        frozen_tower = default_model.image_tower_for(len(images))
        assert isinstance(frozen_tower, torch.jit.ScriptModule)
        frozen = default_model.probabilities(default_model.encode_images(images, batch_size=3), prompts)
        rows = list(predict_files(default_model, images[:2], prompts, batch_size=1))
    finally:
        default_model.image_runtime = "eager"
    assert (eager - frozen).abs().max() <= 1e-3
    assert [r["probabilities"]["normal"] for r in rows] == pytest.approx(eager[:2, 0].tolist(), abs=1e-3)


def test_auto_freezes_only_long_cpu_runs_and_bad_names_are_errors():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert not wants_frozen("auto", cpu, FROZEN_MIN_IMAGES - 1) and wants_frozen("auto", cpu, FROZEN_MIN_IMAGES)
    assert not wants_frozen("eager", cpu, 10_000) and not wants_frozen("frozen", cuda, 10_000)
    assert wants_frozen("frozen", cpu, 1)
    with pytest.raises(VisionCLIPError, match="unknown image runtime"):
        wants_frozen("onnx", cpu, 1)
