"""Prompt embeddings stored beside a checkpoint, so that scoring with a shipped preset needs no text tower.

Encoding the screening preset's prompts through the text tower takes longer than loading the model
and scoring an image. ``prompt_embeddings.safetensors`` beside a checkpoint holds, per prompt, its
normalised embedding under the SHA-256 of its text, and in its header the model id it was computed
with: a file for another model (retrained, or other weights under the same name) is ignored. A
prompt that is not in the file (an edited one) still goes through the text tower.

    python -c "from engine import VisionCLIP; from engine.prompt_cache import write_preset_embeddings; \
               write_preset_embeddings(VisionCLIP.load())"
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import torch

from .checkpoint import PROMPT_CACHE_FILE, atomic_write

log = logging.getLogger(__name__)


def prompt_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def cache_path_for(checkpoint: str | Path) -> Path:
    return Path(checkpoint).parent / PROMPT_CACHE_FILE


def read_prompt_embeddings(path: str | Path, model_id: str) -> dict[str, torch.Tensor]:
    """{prompt key: (D,) embedding} from ``path`` when it was written for ``model_id``; {} otherwise
    (no file, another model's, or unreadable: the text tower then encodes as it always did)."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        return {}
    try:
        with safe_open(str(path), framework="pt") as f:
            if (f.metadata() or {}).get("model_id") != model_id:
                log.info("%s was written for another model: not used", path.name)
                return {}
            return {k: f.get_tensor(k).float() for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        log.info("%s is not readable (%s): not used", path.name, e)
        return {}


def preset_prompts() -> list[str]:
    """Every prompt of every shipped preset, each once."""
    from .prompts import list_presets, load_preset

    return list(dict.fromkeys(p for name in list_presets() for p in load_preset(name).all_prompts()))


def write_preset_embeddings(model, path: str | Path | None = None) -> Path:
    """Encode every shipped preset's prompts with ``model``'s text tower and write them to ``path``
    (by default beside the model's checkpoint); returns the path."""
    from safetensors.torch import save_file

    if path is None:
        path = cache_path_for(model.metadata["checkpoint"])
    path = Path(path)
    prompts = preset_prompts()
    embeddings = model.encode_texts(prompts, use_stored=False)
    tensors = {prompt_key(p): e.contiguous() for p, e in zip(prompts, embeddings)}
    header = {"model_id": model.model_id, "prompts": str(len(prompts))}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=header))
    path.chmod(0o644)  # shipped beside the model: readable like it
    return path
