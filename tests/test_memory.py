"""engine.memory: freed memory kept in the heap on CPU (glibc)."""
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


MALLOC_PROBE = """
import ctypes, sys
import importlib.util
import numpy as np  # not torch, and engine/memory.py read alone: the probe is about glibc, and starts in a second
spec = importlib.util.spec_from_file_location("memory", "engine/memory.py")
memory = importlib.util.module_from_spec(spec)
spec.loader.exec_module(memory)
keep_freed_memory = memory.keep_freed_memory
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
info = ctypes.CDLL("libc.so.6").mallinfo2
info.restype = MallInfo2
tuned = keep_freed_memory() if sys.argv[1] == "tuned" else False
x = np.ones(50_000_000, dtype=np.uint8)  # a 50 MB activation-sized buffer
mapped = info().hblkhd  # bytes in blocks mmapped on their own (handed back to the kernel when freed)
del x
print(tuned, mapped, info().arena)  # arena: heap bytes the process keeps after the free
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning")
def test_keep_freed_memory_keeps_large_buffers_in_the_heap():
    def probe(mode):
        out = subprocess.run([sys.executable, "-c", MALLOC_PROBE, mode], capture_output=True, text=True,
                             timeout=120, cwd=REPO).stdout.split()
        return out[0] == "True", int(out[1]), int(out[2])

    _, default_mapped, _ = probe("default")
    tuned, tuned_mapped, tuned_kept = probe("tuned")
    assert default_mapped >= 50_000_000  # by default glibc maps a block this large on its own...
    assert tuned and tuned_mapped < 50_000_000 and tuned_kept >= 50_000_000  # ...tuned, the heap keeps it
