"""Training configuration: a YAML/JSON file checked in full before any work starts."""
from __future__ import annotations

import dataclasses
import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

from ..errors import VisionCLIPError

SOURCE_TYPES = ("synthetic", "synfundus", "csv", "webdataset")
COLOUR_NORMALISE = ("off", "inference", "both")  # where the per-photograph colour gain applies
SOURCE_KEYS = {
    "synthetic": {"type", "weight", "seed", "size", "conditions", "pipeline"},
    "synfundus": {"type", "weight", "path", "images", "captions", "eye_side_zero"},
    "csv": {"type", "weight", "path", "image_column", "caption_column", "label_column"},
    "webdataset": {"type", "weight", "urls", "caption_key", "image_key", "length"},
}


@dataclass
class TrainConfig:
    # model
    model: str = "visionclip-effl0-minilm"
    pretrained_towers: bool = True
    image_size: int | None = None  # None: the model config's size
    local_contrast: bool | None = None  # subtract the local mean colour; None: the model config's choice
    colour_normalise: str = "off"  # off | inference | both: scale each photograph's mean fundus colour to the training data's
    text_unlocked_layers: int = 0  # text tower frozen (projection trained) unless > 0
    image_unlocked_groups: int | None = None  # None: whole image tower trains; N: only the last N groups
    freeze_bn_stats: bool = False
    image_dropout: float | None = None  # None: the tower's default (timm EfficientNet: 0.2 before the head)
    # data
    sources: list = field(default_factory=lambda: [{"type": "synthetic", "weight": 1.0, "seed": 0, "size": 256}])
    workers: int = 1
    augment: bool = True
    colour_jitter: float = 0.2  # brightness, contrast and saturation drawn from 1 +- this (with augment)
    hue_jitter: float = 0.0  # hue shift drawn from +- this, in turns (0.5 = half the colour wheel)
    # optimisation
    steps: int = 1000
    batch_size: int = 64
    accum_steps: int = 1
    lr: float = 5e-4
    text_proj_lr: float | None = None  # None: same as lr
    weight_decay: float = 0.1
    warmup_steps: int = 50
    grad_clip: float = 1.0
    ema_decay: float | None = None  # None: no weight averaging; d: validate and ship an EMA of the weights (cap d)
    loss: str = "clip"  # clip | soft_labels (pairs that share a label are not negatives)
    precision: str = "auto"  # auto (bf16 on GPU, fp32 on CPU) | fp32 | bf16 | fp16
    channels_last: bool = True
    compile: bool = False
    seed: int = 0
    # checkpoints, logging, validation
    save_every: int = 200
    full_checkpoints: bool = False  # False: model files leave out the frozen text tower (restored from its package)
    keep_last: int = 2
    log_every: int = 10
    val_every: int = 200
    val_synthetic: int = 200  # held-out synthetic images (their own seed range) per validation
    val_seed: int = 1_000_000_007
    val_pipeline: str | None = None  # renderer pipeline of the held-out synthetic set (None: the default, v1)
    eval_data: list = field(default_factory=list)  # real labelled folders: evaluation only
    eval_prompts: str | None = None

    def __post_init__(self) -> None:
        checks = [
            (self.steps >= 1, "steps must be at least 1"),
            (self.batch_size >= 2, "batch_size must be at least 2 (contrastive loss needs negatives)"),
            (self.accum_steps >= 1, "accum_steps must be at least 1"),
            (self.lr > 0, "lr must be positive"),
            (self.warmup_steps >= 0, "warmup_steps must be >= 0"),
            (self.workers >= 0, "workers must be >= 0"),
            (self.keep_last >= 1, "keep_last must be at least 1"),
            (self.save_every >= 1 and self.log_every >= 1 and self.val_every >= 1, "save_every, log_every and val_every must be >= 1"),
            (self.loss in ("clip", "soft_labels"), f"loss must be 'clip' or 'soft_labels', not '{self.loss}'"),
            (self.precision in ("auto", "fp32", "bf16", "fp16"), f"precision must be auto, fp32, bf16 or fp16, not '{self.precision}'"),
            (isinstance(self.sources, list) and len(self.sources) > 0, "sources must be a non-empty list"),
            (0 <= self.colour_jitter < 1, f"colour_jitter must be in [0, 1), not {self.colour_jitter}"),
            (0 <= self.hue_jitter <= 0.5, f"hue_jitter must be in [0, 0.5], not {self.hue_jitter}"),
            (self.ema_decay is None or 0 < self.ema_decay < 1, f"ema_decay must be in (0, 1), not {self.ema_decay}"),
            (self.colour_normalise in COLOUR_NORMALISE, f"colour_normalise must be one of {', '.join(COLOUR_NORMALISE)}, not '{self.colour_normalise}'"),
        ]
        for ok, message in checks:
            if not ok:
                raise VisionCLIPError(f"config: {message}")
        if self.val_pipeline is not None:
            from engine.synth.pipeline import PIPELINES
            if self.val_pipeline not in PIPELINES:
                raise VisionCLIPError(f"config: val_pipeline must be one of {', '.join(PIPELINES)}, not '{self.val_pipeline}'")
        for i, src in enumerate(self.sources):
            if not isinstance(src, dict) or src.get("type") not in SOURCE_TYPES:
                raise VisionCLIPError(f"config: sources[{i}] needs a type, one of {', '.join(SOURCE_TYPES)}")
            unknown = set(src) - SOURCE_KEYS[src["type"]]
            if unknown:
                raise VisionCLIPError(f"config: sources[{i}] ({src['type']}) has unknown keys: {', '.join(sorted(unknown))}")
            weight = src.get("weight", 1.0)
            if not isinstance(weight, (int, float)) or weight <= 0:
                raise VisionCLIPError(f"config: sources[{i}] weight must be a positive number")

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.accum_steps

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _type_ok(value: Any, hint: Any) -> bool:
    origin = get_origin(hint)
    if origin is None:
        if hint is float:
            return isinstance(value, (int, float)) and not isinstance(value, bool)
        if hint is int:
            return isinstance(value, int) and not isinstance(value, bool)
        return isinstance(value, hint)
    if origin is list:
        return isinstance(value, list)
    args = get_args(hint)  # Optional / Union
    return any(a is type(None) and value is None or a is not type(None) and _type_ok(value, a) for a in args)


def config_from_dict(doc: dict, overrides: dict | None = None) -> TrainConfig:
    """Validate keys and types, then build the config; errors name the key."""
    if not isinstance(doc, dict):
        raise VisionCLIPError("config: the file must hold a mapping of settings")
    doc = {**doc, **(overrides or {})}
    hints = get_type_hints(TrainConfig)
    for key, value in doc.items():
        if key not in hints:
            close = difflib.get_close_matches(key, hints, n=1)
            raise VisionCLIPError(f"config: unknown key '{key}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
        if not _type_ok(value, hints[key]):
            raise VisionCLIPError(f"config: '{key}' must be {getattr(hints[key], '__name__', str(hints[key]))}, got {value!r}")
    return TrainConfig(**doc)


def _read_document(path: Path) -> dict:
    if not path.is_file():
        raise VisionCLIPError(f"config file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            doc = yaml.safe_load(text)
        else:
            doc = json.loads(text)
    except Exception as e:  # yaml and json raise many types; all mean "unreadable config"
        raise VisionCLIPError(f"config {path.name} cannot be parsed: {str(e).splitlines()[0]}") from None
    doc = doc or {}
    if not isinstance(doc, dict):
        raise VisionCLIPError(f"config {path.name}: the file must hold a mapping of settings")
    return doc


def read_config_document(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict:
    """A config file's settings with its ``base:`` chain merged in (base first, then this file's keys).

    ``base`` is a path relative to the file that names it. Top-level keys replace the base's whole
    (a ``sources`` list is replaced, not appended to).
    """
    path = Path(path)
    resolved = path.resolve()
    if resolved in _chain:
        cycle = " -> ".join(p.name for p in (*_chain, resolved))
        raise VisionCLIPError(f"config: base cycle {cycle}")
    doc = _read_document(path)
    base = doc.pop("base", None)
    if base is None:
        return doc
    if not isinstance(base, str):
        raise VisionCLIPError(f"config {path.name}: 'base' must be a path, got {base!r}")
    base_path = path.parent / base
    if not base_path.is_file():
        raise VisionCLIPError(f"config {path.name}: base config not found: {base_path}")
    return {**read_config_document(base_path, (*_chain, resolved)), **doc}


YAML11_BOOLEANS = ("on", "off", "yes", "no", "y", "n")


def parse_overrides(items: list[str]) -> dict:
    """``key=value`` strings (values parsed as YAML: 0.5, true, null, [a, b]) into a mapping;
    ``a.b=v`` sets key ``b`` inside mapping ``a``."""
    import yaml

    out: dict = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise VisionCLIPError(f"--set needs key=value, got '{item}'")
        try:
            # YAML 1.2 booleans only: off/on/yes/no stay strings (colour_normalise=off)
            value = raw.strip() if raw.strip().lower() in YAML11_BOOLEANS else yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as e:
            raise VisionCLIPError(f"--set {key}: value cannot be parsed ({str(e).splitlines()[0]})") from None
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise VisionCLIPError(f"--set {key}: '{part}' is set to a value, not a mapping")
        node[leaf] = value
    return out


def _merge(base: dict, overrides: dict) -> dict:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(path: str | Path, overrides: dict | None = None) -> TrainConfig:
    """A checked config from a file (with its ``base:`` chain) and ``overrides`` (nested mappings
    merge into mapping values)."""
    return config_from_dict(_merge(read_config_document(path), overrides or {}))
