"""Would a bfloat16 or float16 image tower keep the probabilities? torch's CPU autocast, measured.

    python -m research.reduced_precision [--model assets/model] [--eval-root ../shared/eval] [--every 7]

The machine's CPU has AVX-512 BF16 and FP16, so oneDNN can run the tower's convolutions in 16 bits.
The shipped tower runs in float32 on the CPU, eager or frozen (engine.image_runtime); this runs it
under ``torch.autocast("cpu", dtype)`` for each 16-bit type, and cast to float16 as a whole and
frozen, and compares each with float32 on every ``--every``-th real photograph of the
evaluation folders (evaluation only: nothing is fitted to them): the largest change of a probability
with the default prompts, the lowest cosine between the two embeddings, the photographs whose top
class changes, and images/s at batch 32 in the engine's passes, every variant in turn, twice. The
runtimes the product offers are held to 1e-3 in probability (tests/test_image_runtime.py); int8 was
measured by ``research.int8_tower``.
"""
from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import EVAL_ROOT
from research.int8_tower import IMAGE_SUFFIXES


def half_frozen_tower(model) -> torch.jit.ScriptModule:
    """The image tower cast to float16 as a whole, then traced, frozen and fused as engine.image_runtime does."""
    import copy

    from engine.image_runtime import freeze_image_tower

    half = copy.deepcopy(model.image_network.visual).half()
    return freeze_image_tower(half, model.image_size, model.images_per_pass, dtype=torch.float16)


def variants(model) -> dict[str, tuple]:
    """{name: (tower, autocast dtype or None, input dtype)}; the first is the float32 reference."""
    from engine.image_runtime import freeze_image_tower

    eager = model.image_network.encode_image
    return {
        "float32, eager": (eager, None, torch.float32),
        "bfloat16 autocast, eager": (eager, torch.bfloat16, torch.float32),
        "float16 autocast, eager": (eager, torch.float16, torch.float32),
        "float32, frozen": (freeze_image_tower(model.image_network.visual, model.image_size, model.images_per_pass),
                            None, torch.float32),
        "float16, frozen": (half_frozen_tower(model), None, torch.float16),
    }


@torch.no_grad()
def embeddings(model, batch: torch.Tensor, variant: tuple) -> torch.Tensor:
    """L2-normalised float32 embeddings of a preprocessed batch, in the engine's passes, through one variant."""
    tower, autocast, dtype = variant
    step = model.images_per_pass
    with torch.autocast("cpu", dtype=autocast) if autocast is not None else contextlib.nullcontext():
        out = [tower(batch[i:i + step].to(dtype)).float() for i in range(0, len(batch), step)]
    return torch.nn.functional.normalize(torch.cat(out), dim=-1)


def images_per_second(model, batch: torch.Tensor, variant: tuple, seconds: float = 4.0) -> float:
    embeddings(model, batch[:2], variant)  # oneDNN builds its kernels on the first pass
    start, done = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        embeddings(model, batch, variant)
        done += len(batch)
    return done / (time.perf_counter() - start)


def main(argv=None) -> None:
    from engine import VisionCLIP
    from engine.prompts import load_prompt_set

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--eval-root", default=str(EVAL_ROOT))
    ap.add_argument("--every", type=int, default=7, help="score every n-th real photograph")
    args = ap.parse_args(argv)

    model = VisionCLIP.load(args.model)
    files = sorted(p for p in Path(args.eval_root).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[::args.every]
    images = torch.stack([model.transform(f) for f in files]).contiguous(memory_format=torch.channels_last)
    prompts = load_prompt_set(None)
    towers = variants(model)
    reference = embeddings(model, images, towers["float32, eager"])
    pa = model.probabilities(reference, prompts).numpy()
    print(f"{len(files)} real photographs, {torch.get_num_threads()} threads; against float32, eager:")
    for name, variant in list(towers.items())[1:]:
        low = embeddings(model, images, variant)
        pb = model.probabilities(low, prompts).numpy()
        print(f"{name}: largest |dP| {np.abs(pa - pb).max():.4f}, mean {np.abs(pa - pb).mean():.5f}; lowest cosine "
              f"{float((reference * low).sum(-1).min()):.5f}; top class changed on {int((pa.argmax(1) != pb.argmax(1)).sum())}")
    for _ in range(2):
        for name, variant in towers.items():
            print(f"{name}: {images_per_second(model, images[:32], variant):.1f} images/s (batch 32)", flush=True)


if __name__ == "__main__":
    main()
