"""Shared fixtures: the default model is loaded once per test session (a few seconds on CPU)."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `pytest -n 2` on 2 cores: one thread per worker (and per CLI subprocess it starts), not 2 x 2
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)

import numpy as np
import pytest
from pathlib import Path

from PIL import Image, ImageDraw


E2E = Path(__file__).resolve().parent / "e2e"


def pytest_collection_modifyitems(items):
    """Browser tests (tests/e2e: Chromium against a served app) are slow as a folder: the fast tier,
    `pytest -m "not slow"`, leaves them to the full suite."""
    for item in items:
        if E2E in Path(item.path).parents:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def default_model():
    from engine import VisionCLIP

    return VisionCLIP.load()


@pytest.fixture(scope="session")
def untrained_model():
    from engine import VisionCLIP

    return VisionCLIP.from_config()


def make_fundus(size=(320, 240), seed=0, disc_side="right") -> Image.Image:
    """A crude fundus-like picture: orange disc on black, a pale optic disc, a few dark vessels."""
    rng = np.random.default_rng(seed)
    w, h = size
    img = Image.new("RGB", size, (0, 0, 0))
    d = ImageDraw.Draw(img)
    r = min(w, h) // 2 - 4
    cx, cy = w // 2, h // 2
    d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(int(rng.integers(150, 200)), 70, 30))
    dx = r // 2 if disc_side == "right" else -r // 2
    d.ellipse([cx + dx - r // 6, cy - r // 6, cx + dx + r // 6, cy + r // 6], fill=(240, 200, 150))
    for _ in range(4):
        d.line([cx + dx, cy, int(rng.integers(cx - r, cx + r)), int(rng.integers(cy - r, cy + r))], fill=(110, 20, 10), width=3)
    return img


@pytest.fixture
def fundus_image():
    return make_fundus()


@pytest.fixture
def labelled_folder(tmp_path):
    """A tiny labelled folder in the eval layout (labels.csv with path,label)."""
    rows = []
    (tmp_path / "img").mkdir()
    for i in range(6):
        label = ["normal", "glaucoma", "cataract"][i % 3]
        name = f"img/{i}.png"
        make_fundus(seed=i).save(tmp_path / name)
        rows.append(f"{name},{label}")
    (tmp_path / "labels.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    return tmp_path


def forkserver_processes() -> set[int]:
    """Pids of running multiprocessing fork servers and the workers they started (Linux /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if b"multiprocessing.forkserver" in (entry / "cmdline").read_bytes():
                    found.add(int(entry.name))
            except OSError:
                pass
    return found
