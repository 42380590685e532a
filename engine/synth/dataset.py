"""Infinite (or finite) stream of synthetic fundus image/caption pairs for training."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from engine.errors import VisionCLIPError
from engine.synth.captions import build_caption, label_caption
from engine.synth.pipeline import get_pipeline
from engine.synth.render import render_fundus
from engine.synth.schema import parse_conditions


def _rank_world():
    try:
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    except Exception:  # pragma: no cover
        pass
    return 0, 1


def worker_start_method() -> str:
    """How to start render workers: forkserver, not fork. A fork copies OpenCV's thread pool as the
    parent left it, and a child that renders can then wait forever on threads it does not have (seen
    as rare hangs once the parent had rendered)."""
    import multiprocessing

    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


def _start_time(pid: int) -> str | None:
    """The kernel's start time of a live process (field 22 of /proc/PID/stat); None once it has died
    (gone, or a zombie its parent has not yet reaped)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return None if len(fields) < 20 or fields[0] in (b"Z", b"X") else fields[19].decode()


class ExitWithParent:
    """Worker initialiser: end this worker when the process that started it dies.

    A forkserver worker's parent is the fork server, not the trainer, and every worker holds the fork
    server's liveness pipe open, so neither notices a killed trainer: PyTorch's own watchdog waits for
    the parent id to change, and it never does. Seen as render workers spinning on after a SIGTERM.
    This polls the starting process (by pid and start time, so a reused pid does not count)."""

    def __init__(self, interval: float = 1.0):
        import os

        self.pid, self.interval = os.getpid(), interval
        self.started = _start_time(self.pid)

    def __call__(self, *_):
        import os
        import threading
        import time

        if self.started is None:  # no /proc (not Linux): nothing to watch by
            return

        def watch():
            while _start_time(self.pid) == self.started:
                time.sleep(self.interval)
            os._exit(1)

        threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


class SyntheticFundusStream(torch.utils.data.IterableDataset):
    """Yields {"image", "caption", "labels"}; samples never repeat across workers or ranks."""

    def __init__(self, seed=0, size=256, transform=None, conditions=None, length=None, pipeline=None):
        super().__init__()
        if isinstance(size, bool) or not isinstance(size, int) or not 64 <= size <= 4096:
            raise VisionCLIPError(f"Image size must be an integer from 64 to 4096, got {size!r}.")
        if length is not None and (not isinstance(length, int) or length < 1):
            raise VisionCLIPError(f"Stream length must be a positive integer or None, got {length!r}.")
        if not isinstance(seed, int) or seed < 0:
            raise VisionCLIPError(f"Seed must be a non-negative integer, got {seed!r}.")
        parse_conditions(conditions)
        # an unknown pipeline is a clear error now, not in a worker later; a name travels to workers as the
        # Pipeline itself, so one registered at run time (research/) renders in spawned workers too
        self.pipeline = get_pipeline(pipeline) if isinstance(pipeline, str) else pipeline
        get_pipeline(self.pipeline)
        self.seed, self.size, self.transform = seed, size, transform
        self.conditions, self.length = conditions, length

    def __len__(self):
        if self.length is None:
            raise TypeError("infinite stream has no length")
        return self.length

    def _shard(self):
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        rank, world = _rank_world()
        return rank * nw + wid, world * nw

    def __iter__(self):
        if torch.utils.data.get_worker_info() is not None:  # a DataLoader worker process, as torch does for
            import cv2                                      # its own threads: one image at a time each

            cv2.setNumThreads(1)
        shard, nshards = self._shard()
        i = shard
        while self.length is None or i < self.length:
            yield self.sample(i)
            i += nshards

    def sample(self, index: int) -> dict:
        s = render_fundus(self.seed * 1_000_003 + index if self.seed else index, self.size, self.conditions,
                          self.pipeline)
        rng = np.random.default_rng([self.seed, index, 7])
        if rng.random() < 0.8:
            cap = build_caption(s.labels, s.findings, rng)
        else:
            cap = label_caption(s.labels, rng)
        img = Image.fromarray(s.image)
        if self.transform is not None:
            img = self.transform(img)
        return {"image": img, "caption": cap, "labels": dict(s.labels), "generator_version": s.generator_version}
