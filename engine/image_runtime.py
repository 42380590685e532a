"""Faster copies of the image tower for long runs on the CPU: ONNX Runtime, or frozen TorchScript.

- ``onnx``: the tower exported to ONNX in memory (torch.onnx) and run by ONNX Runtime's CPU provider,
  which fuses EfficientNet's depthwise blocks better than oneDNN does through torch, a pass of two
  320-px images a core; embeddings within 3e-6 of the eager tower's (docs/performance_notes.md).
  Export and session take about 2 s.
- ``frozen``: ``torch.jit.trace`` + ``torch.jit.freeze`` + ``torch.jit.optimize_for_inference`` folds
  each batch norm into its convolution and fuses the activations: 22-24 against 34-38 ms of CPU time an
  image on one core, embeddings within 3e-6. Needs nothing beyond torch.
- ``auto`` (what ``visionclip predict`` and ``eval`` use): from ``FROZEN_MIN_IMAGES`` images on, ONNX
  Runtime when the ``onnx`` extra is installed, else the frozen tower; the eager tower below that.

The eager tower stays the reference. A copy holds the weights it was built from: it is for a model that
no longer changes (never during training), and :class:`engine.model.VisionCLIP` builds it only when
asked to.
"""
from __future__ import annotations

import logging
import time
import warnings

import numpy as np
import torch

from .image_runtime_names import RUNTIMES  # the command line reads them without importing torch

log = logging.getLogger(__name__)

FROZEN_MIN_IMAGES = 256  # a run shorter than this does not repay building a copy (about 2 s)


def freeze_image_tower(visual: torch.nn.Module, image_size: int, images_per_pass: int,
                       dtype: torch.dtype = torch.float32) -> torch.jit.ScriptModule:
    """The traced, frozen and fused copy of ``visual`` for channels-last (N, 3, S, S) CPU input of
    ``visual``'s own ``dtype`` (float32 in the product; research.reduced_precision traces a float16 copy)."""
    start = time.perf_counter()
    example = torch.zeros(images_per_pass, 3, image_size, image_size, dtype=dtype)
    example = example.contiguous(memory_format=torch.channels_last)
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # TorchScript's deprecation notice: the eager tower stays the reference
        traced = torch.jit.trace(visual.eval(), example, check_trace=False)
        frozen = torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))
        frozen(example)  # the first call compiles the fused kernels: before the clock of any caller
    log.info("froze the image tower in %.1f s", time.perf_counter() - start)
    return frozen


def export_onnx(visual: torch.nn.Module, image_size: int) -> bytes:
    """The image tower as an ONNX model (input "image", (N, 3, S, S) float32; output "embedding")."""
    import io

    buffer = io.BytesIO()
    example = torch.zeros(2, 3, image_size, image_size)
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's notices about its TorchScript path
        torch.onnx.export(visual.eval(), (example,), buffer, input_names=["image"], output_names=["embedding"],
                          dynamic_axes={"image": {0: "batch"}, "embedding": {0: "batch"}}, dynamo=False)
    return buffer.getvalue()


class OnnxImageTower:
    """The image tower as an ONNX Runtime session: called like the tower on an (N, 3, S, S) float32 CPU
    tensor, it returns the (N, D) embeddings as a tensor.

    It takes a whole batch (``runs_passes``) and runs it in passes of ``images_per_pass`` images, one
    pass a thread on ``threads`` threads, each pass on one core: EfficientNet's many small operators
    spend much of a two-thread pass waiting for each other, and in ``predict`` on 2 cores whole passes
    side by side gave 10-23% more images/s (docs/performance_notes.md)."""

    runs_passes = True  # engine.model.VisionCLIP.encode_tensors hands it the whole batch
    memory_format = torch.contiguous_format  # ... laid out as ONNX Runtime reads it (NCHW)

    def __init__(self, visual: torch.nn.Module, image_size: int, threads: int | None = None,
                 images_per_pass: int = 2):
        from concurrent.futures import ThreadPoolExecutor

        import onnxruntime as ort

        start = time.perf_counter()
        self.images_per_pass = max(1, int(images_per_pass))
        threads = threads or torch.get_num_threads()
        self._passes = ThreadPoolExecutor(threads, thread_name_prefix="visionclip-onnx") if threads > 1 else None
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # a pass a core: the threads are the passes' (see above)
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(export_onnx(visual, image_size), options, providers=["CPUExecutionProvider"])
        example = np.zeros((2, 3, image_size, image_size), np.float32)
        self.session.run(None, {"image": example})  # first-run set-up, before any caller's clock
        log.info("exported the image tower to ONNX Runtime in %.1f s", time.perf_counter() - start)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        array = images.detach().cpu().float().contiguous().numpy()
        passes = [array[i:i + self.images_per_pass] for i in range(0, len(array), self.images_per_pass)]
        run = self._passes.map if self._passes is not None else map
        return torch.from_numpy(np.concatenate(list(run(self._run_pass, passes))))

    def _run_pass(self, images: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"image": images})[0]  # ONNX Runtime lets go of the GIL while it runs


def onnx_available() -> bool:
    """Whether the ``onnx`` extra (the exporter's onnx and ONNX Runtime) is installed."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))


def tower_runtime(runtime: str, device: torch.device, images: int) -> str:
    """The runtime a run of ``images`` images on ``device`` uses under the setting ``runtime``: eager,
    frozen or onnx. A forced runtime whose packages are missing is a one-line error."""
    from .errors import VisionCLIPError

    if runtime not in RUNTIMES:
        raise VisionCLIPError(f"unknown image runtime '{runtime}'; use one of {', '.join(RUNTIMES)}")
    if device.type != "cpu" or runtime == "eager":
        return "eager"
    if runtime == "auto":
        if images < FROZEN_MIN_IMAGES:
            return "eager"
        return "onnx" if onnx_available() else "frozen"
    if runtime == "onnx" and not onnx_available():
        raise VisionCLIPError("the onnx image runtime needs the onnx and onnxruntime packages "
                              "(pip install 'visionclip[onnx]'); use --runtime frozen or eager")
    return runtime
