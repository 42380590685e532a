"""Safetensors checkpoints with the model config and metadata embedded in the header.

Loading never unpickles. A ``.pt``/``.pth``/``.bin`` file can run code when read, so one is refused
unless the caller passes ``trust_pickle=True`` (and even then it is read with ``weights_only``).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import VisionCLIPError

FORMAT = "visionclip/1"
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl")


def weights_hash(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 over tensor names, dtypes, shapes and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def make_model_id(config_name: str, state_dict: dict[str, torch.Tensor], trained: bool = True,
                  config: dict | None = None) -> str:
    """``<config name>-<12 hex>``: a hash of the weights and, when given, of the config.

    The config holds the preprocessing (input size, normalisation, colour target), so the same
    weights fed differently, which give different outputs, get different ids.
    """
    prefix = config_name if trained else f"untrained-{config_name}"
    digest = weights_hash(state_dict)
    if config is not None:
        digest = hashlib.sha256((digest + json.dumps(config, sort_keys=True)).encode()).hexdigest()
    return f"{prefix}-{digest[:12]}"


def atomic_write(path: Path, write) -> None:
    """Write through a temp file in the same folder and rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a checkpoint is an ordinary file
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_checkpoint(
    path: str | Path,
    state_dict: dict[str, torch.Tensor],
    config: dict,
    metadata: dict[str, Any],
    dtype: torch.dtype | None = None,
) -> str:
    """Write weights (optionally cast, e.g. fp16) with config and metadata; returns the model id."""
    path = Path(path)
    tensors = {}
    for k, v in state_dict.items():
        v = v.detach().to("cpu")
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        tensors[k] = v.contiguous().clone()  # shared storage (tied weights) is not allowed
    model_id = metadata.get("model_id") or make_model_id(metadata.get("config_name", "model"), tensors, config=config)
    header = {
        "format": FORMAT,
        "model_id": model_id,
        "config": json.dumps(config, sort_keys=True),
        "metadata": json.dumps({**metadata, "model_id": model_id}, sort_keys=True, default=str),
    }
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=header))
    return model_id


def read_header(path: str | Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.metadata() or {}


def load_checkpoint(path: str | Path, trust_pickle: bool = False) -> tuple[dict[str, torch.Tensor], dict | None, dict]:
    """Return (state_dict, config or None, metadata) from a checkpoint file."""
    path = Path(path)
    if not path.is_file():
        raise VisionCLIPError(f"model checkpoint not found: {path}")
    if path.suffix.lower() in PICKLE_SUFFIXES:
        if not trust_pickle:
            raise VisionCLIPError(
                f"{path.name} is a pickle checkpoint, which can run code when loaded; convert it to "
                "safetensors or pass --trust-pickle if you trust its source"
            )
        obj = torch.load(path, map_location="cpu", weights_only=True)
        state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
        if not isinstance(state, dict):
            raise VisionCLIPError(f"{path.name} holds no state dict")
        state = {k.removeprefix("module."): v for k, v in state.items()}
        return state, obj.get("config") if isinstance(obj, dict) else None, {}
    try:
        header = read_header(path)
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise VisionCLIPError(f"{path.name} is not a readable safetensors checkpoint ({str(e).splitlines()[0][:80]})") from None
    try:
        config = json.loads(header["config"]) if "config" in header else None
        metadata = json.loads(header.get("metadata", "{}"))
    except json.JSONDecodeError:
        raise VisionCLIPError(f"{path.name}: its embedded config is not valid JSON") from None
    if "model_id" in header:
        metadata.setdefault("model_id", header["model_id"])
    return state, config, metadata
