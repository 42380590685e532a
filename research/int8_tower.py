"""Would an int8 image tower keep the probabilities? ONNX Runtime static quantization, measured.

    python -m research.int8_tower [--model assets/model] [--calibration 48] [--method minmax]
                                  [--keep-depthwise] [--eval-root ../shared/eval] [--every 7]

The shipped tower is exported to ONNX as engine.image_runtime does, quantized with ONNX Runtime's
``quantize_static`` (QDQ, per-channel int8 weights, uint8 activations) on renders of the generator
(never real photographs), and compared with the float32 export on every ``--every``-th real photograph
of the evaluation folders (evaluation only: nothing is fitted to them): the largest change of a
probability with the default prompts, the lowest cosine between the two embeddings, the photographs
whose top class changes, and both sessions' images/s at batch 32 in passes of two. The runtimes the
product offers are held to 1e-3 in probability (tests/test_image_runtime.py).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import EVAL_ROOT
from engine.image_runtime import export_onnx

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def export_tower(model, path: Path) -> None:
    path.write_bytes(export_onnx(model.image_network.visual, model.image_size))


def quantize(model, fp32: Path, out: Path, calibration: int, method: str, keep_depthwise: bool) -> None:
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from engine.synth import render_fundus

    prepared = fp32.with_name("prepared.onnx")
    quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
    images = np.stack([model.transform(render_fundus(1000 + i, 512).image).numpy() for i in range(calibration)])

    class Renders(CalibrationDataReader):
        def __init__(self):
            self.start = 0

        def get_next(self):
            if self.start >= len(images):
                return None
            self.start += 8
            return {"image": images[self.start - 8:self.start]}

    def depthwise(node) -> bool:
        return node.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in node.attribute)

    excluded = [n.name for n in onnx.load(str(prepared)).graph.node if keep_depthwise and depthwise(n)]
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    quantize_static(str(prepared), str(out), Renders(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=methods[method], nodes_to_exclude=excluded)


def session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as engine.image_runtime
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def embeddings(sess, images: np.ndarray) -> torch.Tensor:
    out = np.concatenate([sess.run(None, {"image": images[i:i + 16]})[0] for i in range(0, len(images), 16)])
    return torch.nn.functional.normalize(torch.from_numpy(out), dim=-1)


def images_per_second(sess, images: np.ndarray, seconds: float = 4.0) -> float:
    batch = images[:32]
    sess.run(None, {"image": batch[:2]})
    start, done = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        for i in range(0, len(batch), 2):
            sess.run(None, {"image": batch[i:i + 2]})
        done += len(batch)
    return done / (time.perf_counter() - start)


def main(argv=None) -> None:
    from engine import VisionCLIP
    from engine.prompts import load_prompt_set

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--calibration", type=int, default=48, help="renders to calibrate the activation ranges on")
    ap.add_argument("--method", choices=("minmax", "entropy", "percentile"), default="minmax")
    ap.add_argument("--keep-depthwise", action="store_true", help="leave the depthwise convolutions in float32")
    ap.add_argument("--eval-root", default=str(EVAL_ROOT))
    ap.add_argument("--every", type=int, default=7, help="score every n-th real photograph")
    args = ap.parse_args(argv)

    model = VisionCLIP.load(args.model)
    work = Path(tempfile.mkdtemp(prefix="visionclip_int8_"))
    export_tower(model, work / "fp32.onnx")
    quantize(model, work / "fp32.onnx", work / "int8.onnx", args.calibration, args.method, args.keep_depthwise)
    fp32, int8 = (session(work / f"{name}.onnx", torch.get_num_threads()) for name in ("fp32", "int8"))
    files = sorted(p for p in Path(args.eval_root).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[::args.every]
    images = np.stack([model.transform(f).numpy() for f in files])
    prompts = load_prompt_set(None)
    a, b = embeddings(fp32, images), embeddings(int8, images)
    pa, pb = model.probabilities(a, prompts).numpy(), model.probabilities(b, prompts).numpy()
    print(f"{len(files)} real photographs; calibration {args.calibration} renders, {args.method}"
          f"{', depthwise kept in float32' if args.keep_depthwise else ''}")
    print(f"largest |dP| {np.abs(pa - pb).max():.4f}, mean {np.abs(pa - pb).mean():.5f}; lowest cosine "
          f"{float((a * b).sum(-1).min()):.4f}; top class changed on {int((pa.argmax(1) != pb.argmax(1)).sum())}")
    for name, sess in (("float32", fp32), ("int8", int8), ("float32", fp32), ("int8", int8)):
        print(f"{name}: {images_per_second(sess, images):.1f} images/s (batch 32, passes of two)")


if __name__ == "__main__":
    main()
