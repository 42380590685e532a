"""The frozen and ONNX Runtime copies of the image tower (engine.image_runtime) against the eager one,
the reference."""
import pytest
import torch

from engine import VisionCLIPError, load_preset
from engine.batch import predict_files
from engine.image_runtime import FROZEN_MIN_IMAGES, OnnxImageTower, onnx_available, tower_runtime
from engine.resources import asset_dir

from .conftest import make_fundus

needs_onnx = pytest.mark.skipif(not onnx_available(), reason="the onnx extra is not installed")


def _probabilities_under(model, runtime, images, prompts):
    model.image_runtime = runtime
    try:
        tower = model.image_tower_for(len(images))
        probs = model.probabilities(model.encode_images(images, batch_size=3), prompts)
        rows = list(predict_files(model, images[:2], prompts, batch_size=1))
    finally:
        model.image_runtime = "eager"
    return tower, probs, rows


@pytest.mark.parametrize("runtime, kind", [("frozen", torch.jit.ScriptModule),
                                           pytest.param("onnx", OnnxImageTower, marks=needs_onnx)])
def test_fast_towers_give_the_eager_probabilities_on_renders_and_photographs(default_model, runtime, kind):
    images = [*sorted(asset_dir("examples").glob("*.png")), *[make_fundus(seed=s, size=(400, 300)) for s in range(3)]]
    prompts = load_preset("screening")
    eager = default_model.probabilities(default_model.encode_images(images), prompts)
    tower, fast, rows = _probabilities_under(default_model, runtime, images, prompts)
    assert isinstance(tower, kind)
    assert (eager - fast).abs().max() <= 1e-3
    assert [r["probabilities"]["normal"] for r in rows] == pytest.approx(eager[:2, 0].tolist(), abs=1e-3)


@needs_onnx
@pytest.mark.parametrize("threads", [1, 2])
def test_onnx_tower_takes_any_batch_and_matches_the_eager_embeddings(default_model, threads):
    # 5 images: passes of 2, 2 and 1, side by side on two threads, in order
    tower = OnnxImageTower(default_model.image_network.visual, default_model.image_size, threads=threads)
    assert tower.runs_passes and tower.images_per_pass == 2
    x = torch.randn(5, 3, default_model.image_size, default_model.image_size).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        eager = default_model.image_network.encode_image(x)
    out = tower(x)
    assert out.shape == eager.shape and out.dtype == torch.float32
    assert (out - eager).abs().max() <= 1e-4


def test_a_batch_is_laid_out_as_its_tower_asks(default_model):
    # ONNX Runtime reads NCHW: encode_tensors builds that layout for it instead of channels_last
    seen = []

    def tower(batch):
        seen.append((batch.is_contiguous(), batch.is_contiguous(memory_format=torch.channels_last)))
        return torch.ones(len(batch), 4)

    tensors = [default_model.image_tensor(make_fundus(seed=s, size=(200, 200))) for s in range(3)]
    tower.runs_passes = True
    default_model.encode_tensors(tensors, tower)
    tower.memory_format = torch.contiguous_format
    out = default_model.encode_tensors(tensors, tower)
    assert seen == [(False, True), (True, False)]
    assert torch.allclose(out, torch.full((3, 4), 0.5))


def test_auto_uses_a_fast_tower_only_for_long_cpu_runs_and_bad_names_are_errors(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert tower_runtime("auto", cpu, FROZEN_MIN_IMAGES - 1) == "eager"
    assert tower_runtime("auto", cpu, FROZEN_MIN_IMAGES) == ("onnx" if onnx_available() else "frozen")
    assert tower_runtime("eager", cpu, 10_000) == "eager" and tower_runtime("frozen", cuda, 10_000) == "eager"
    assert tower_runtime("frozen", cpu, 1) == "frozen"
    with pytest.raises(VisionCLIPError, match="unknown image runtime"):
        tower_runtime("tensorrt", cpu, 1)
    # without the onnx extra, auto falls back to the frozen tower and a forced onnx is a one-line error
    monkeypatch.setattr("engine.image_runtime.onnx_available", lambda: False)
    assert tower_runtime("auto", cpu, FROZEN_MIN_IMAGES) == "frozen"
    with pytest.raises(VisionCLIPError, match="needs the onnx and onnxruntime packages"):
        tower_runtime("onnx", cpu, 1)
