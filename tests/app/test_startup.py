"""Start-up of the app: the first page must not wait for libraries that only later actions use.

``python launch.py`` loads the model and builds the interface before it serves; Grad-CAM
(pytorch-grad-cam, torchvision), scikit-learn (engine.evaluate), the synthetic generator and open_clip
(the lite image tower scores without it) are imported on first use instead (issue 37).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

NOT_AT_START = ("pytorch_grad_cam", "torchvision", "sklearn", "engine.evaluate", "engine.synth", "engine.saliency",
                "open_clip", "timm", "transformers")

# What launch.py (visionclip_app.cli.main) runs before it prints "ready": the model, the case store
# and the interface of every tab, queued.
PROBE = r"""
import json, sys, tempfile
from pathlib import Path

import gradio
from engine import VisionCLIP
from visionclip_app import cli
from visionclip_app.handlers import AppContext
from visionclip_app.store import CaseStore
from visionclip_app.ui import build_ui

work = Path(tempfile.mkdtemp())
ctx = AppContext.create(VisionCLIP.load(), CaseStore(work / "cases.db"), work / "work")
build_ui(ctx).queue(default_concurrency_limit=4, max_size=64)
names = json.loads(sys.argv[1])
print(json.dumps({"imported": sorted(n for n in names if n in sys.modules), "built": getattr(ctx.model, "network_built", None)}))
"""


def test_the_first_page_imports_no_grad_cam_sklearn_generator_or_open_clip():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "GRADIO_ANALYTICS_ENABLED": "False"}
    out = subprocess.run([sys.executable, "-c", PROBE, json.dumps(NOT_AT_START)], capture_output=True, text=True,
                         cwd=REPO, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["imported"] == [], f"imported before the app is ready: {result['imported']}"
    assert result["built"] is False  # the whole open_clip network waits for its first use (Grad-CAM, text tower)


def test_the_saliency_names_the_page_lists_are_the_saliency_packages():
    from engine import saliency
    from engine import saliency_names as names

    assert tuple(saliency.METHODS) == names.METHOD_NAMES
    assert saliency.DEFAULT_METHOD == names.DEFAULT_METHOD
    assert tuple(saliency.TARGETS) == names.TARGETS
    assert tuple(saliency.DETAIL_METHODS) == names.DETAIL_METHODS
    assert set(saliency.SLOW_METHODS) == set(names.SLOW_METHODS)
    assert (saliency.DETAIL, saliency.MULTISCALE) == (names.DETAIL, names.MULTISCALE)
