"""research/int8_tower.py: the quantized export is int8 where asked, runs, and is compared with float32."""
import numpy as np
import pytest
import torch

from engine.image_runtime import onnx_available

pytestmark = pytest.mark.skipif(not onnx_available(), reason="the onnx extra is not installed")


def test_the_quantized_tower_holds_int8_convolutions_and_embeds_like_the_export(default_model, tmp_path):
    import onnx

    from research import int8_tower

    int8_tower.export_tower(default_model, tmp_path / "fp32.onnx")
    int8_tower.quantize(default_model, tmp_path / "fp32.onnx", tmp_path / "int8.onnx", calibration=8,
                        method="minmax", keep_depthwise=False)
    ops = [n.op_type for n in onnx.load(str(tmp_path / "int8.onnx")).graph.node]
    assert ops.count("QuantizeLinear") > 20 and "Conv" in ops
    images = torch.stack([default_model.transform(np.full((64, 64, 3), (150, 80, 40), np.uint8))] * 3).numpy()
    fp32, int8 = (int8_tower.session(tmp_path / f"{n}.onnx", 1) for n in ("fp32", "int8"))
    a, b = int8_tower.embeddings(fp32, images), int8_tower.embeddings(int8, images)
    assert a.shape == b.shape and a.shape[0] == 3
    cosine = (a * b).sum(-1)
    assert torch.allclose(a.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert (cosine > 0.5).all() and (cosine < 1 - 1e-7).any(), "quantized, not the float32 graph again"
