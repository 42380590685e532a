"""Keep freed memory in the process on CPU, so that each batch does not fault it back in.

A CPU training step (or a batch of images encoded for evaluation) allocates and frees the same large
activation buffers every time. glibc hands any block over its mmap threshold (32 MB at most) straight
back to the kernel when it is freed, so the next step maps it again and the kernel zero-fills every page on first touch: on 2 cores
that page-fault work took more CPU time than the convolutions. Serving large blocks from the heap
and never trimming it keeps those pages: 1.93x the samples/s of the default settings for the default
model at batch 64 and 320 px on 2 cores, for a peak RSS of 4.5 GB instead of 3.4 GB (the heap keeps
freed blocks that a later, larger request cannot reuse); `python -m bench.train --allocator`.
`visionclip train`, `eval` and `predict` call it on CPU; the app does not (it would hold its peak
memory between requests).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("visionclip")

M_TRIM_THRESHOLD = -1  # glibc mallopt parameters (malloc.h)
M_MMAP_MAX = -4


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to serve large blocks from the heap and never trim it; False where there is no glibc."""
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS, Windows): nothing to tune
        return False
    ok = bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
    if not ok:
        log.info("could not tune malloc: running with the default allocator settings")
    return ok
