"""Where the shipped prompt presets, default model and example photographs are found.

An installed wheel carries them inside the package, as ``engine/_assets/`` (setup.py copies the
repository's ``assets/`` there at build time), found through :mod:`importlib.resources`. A checkout,
or an editable install of one, has no ``engine/_assets/`` and reads the repository's ``assets/``.
``VISIONCLIP_MODEL`` (a checkpoint file or a folder holding one) overrides the default model.
"""
from __future__ import annotations

import importlib.resources
import os
from pathlib import Path

from .errors import VisionCLIPError

MODEL_ENV = "VISIONCLIP_MODEL"
DEFAULT_MODEL_FILE = "visionclip.safetensors"
_CHECKOUT_ASSETS = Path(__file__).resolve().parent.parent / "assets"


def asset_dir(name: str) -> Path:
    """The shipped ``assets/<name>`` folder (prompts, model, examples): the installed package's
    copy when there is one, else the checkout's."""
    packaged = Path(str(importlib.resources.files("engine").joinpath("_assets", name)))
    return packaged if packaged.is_dir() else _CHECKOUT_ASSETS / name


def default_model_path() -> Path:
    """The checkpoint ``VisionCLIP.load()`` reads when given no path, or a one-line error saying
    where to put one."""
    override = os.environ.get(MODEL_ENV)
    if override:
        path = Path(override).expanduser()
        if not path.exists():
            raise VisionCLIPError(f"{MODEL_ENV}={override}: no such checkpoint file or folder")
        return path
    path = asset_dir("model") / DEFAULT_MODEL_FILE
    if path.is_file():
        return path
    raise VisionCLIPError(
        f"no default model: put {DEFAULT_MODEL_FILE} in {path.parent}, set {MODEL_ENV}=PATH, or pass --model PATH"
    )
