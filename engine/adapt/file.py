"""An adapter as a small safetensors file, and the :class:`Adapter` that the CLI and the app use.

The file holds the head's tensors and the zero-shot text anchor (so it predicts without re-encoding
prompts), and in its header: the base model id it was fitted on, the method and its settings, the
prompt set and its hash, the classes, how many real images of each class it saw, where they came
from (case ids or a folder hash), and the date. An adapter is a local, per-user file: never shipped.
"""
from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..checkpoint import atomic_write, read_header
from ..errors import VisionCLIPError
from ..prompts import PromptSet
from .base import FewShotAdapter, TextAnchor
from .blend import TextVisualBlend
from .clap import ClapAdapter
from .linear_probe import LinearProbe
from .stage import ClapStage, StageFeatures, encode_with_stage
from .zero_shot import ZeroShot

FORMAT = "visionclip-adapter"
FORMAT_VERSION = 1
METHODS: dict[str, type[FewShotAdapter]] = {m.method: m for m in (ClapAdapter, ClapStage, TextVisualBlend, LinearProbe,
                                                                      ZeroShot)}
DEFAULT_METHOD = "clap"
HEADER_KEYS = ("base_model_id", "method", "params", "prompt_set", "prompt_set_sha256", "classes", "images_per_class",
               "provenance", "created_at")


def encode_for(model, images, head: "FewShotAdapter | Adapter | str") -> torch.Tensor:
    """The image features ``head`` (a head, an :class:`Adapter` or a method name) reads: the embeddings of
    ``model.encode_images``, or for ``clap-stage`` the rows [embedding | pooled stage features]."""
    head = make_head(head) if isinstance(head, str) else getattr(head, "head", head)
    if isinstance(head, ClapStage):
        return encode_with_stage(model, list(images) if isinstance(images, (list, tuple)) else [images], head.stages)
    return model.encode_images(images)


def default_method(model) -> str:
    """The method measured best (docs/adapters.md): ``clap-stage`` where the image tower has the mid-level
    stage it reads (the shipped EfficientNet-Lite0), else ``clap``."""
    try:
        StageFeatures(model.image_network, ClapStage.default_params()["stages"])
    except VisionCLIPError:
        return "clap"
    return "clap-stage"


def make_head(method: str = DEFAULT_METHOD, **params) -> FewShotAdapter:
    key = str(method).strip().lower().replace("_", "-")
    if key not in METHODS:
        raise VisionCLIPError(f"unknown adapter method '{method}'; choose one of: {', '.join(METHODS)}")
    return METHODS[key](**params)


class Adapter:
    """A fitted head bound to one base model and one prompt set."""

    def __init__(self, head: FewShotAdapter, prompt_set: PromptSet, base_model_id: str, images_per_class: dict[str, int],
                 provenance: dict | None = None, created_at: str | None = None):
        self.head = head
        self.prompt_set = prompt_set
        self.base_model_id = base_model_id
        self.images_per_class = dict(images_per_class)
        self.provenance = dict(provenance or {})
        self.created_at = created_at or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")

    @property
    def method(self) -> str:
        return self.head.method

    @property
    def image_features(self) -> str:
        return self.head.image_features

    def encode(self, model, images) -> torch.Tensor:
        """The features this adapter reads, for ``images`` (see :func:`encode_for`)."""
        return encode_for(model, images, self.head)

    @property
    def classes(self) -> list[str]:
        return list(self.prompt_set.classes)

    def __repr__(self) -> str:
        return f"Adapter({self.method}, {len(self.classes)} classes, {sum(self.images_per_class.values())} images, base {self.base_model_id})"

    # --- fitting --------------------------------------------------------------------------
    @classmethod
    def fit(cls, model, image_embeddings, labels: list[str], prompt_set: PromptSet, method: str = DEFAULT_METHOD,
            provenance: dict | None = None, **params) -> "Adapter":
        """Fit on (N, D) embeddings from ``model.encode_images`` and their class names."""
        if len(prompt_set) < 2:
            raise VisionCLIPError("an adapter needs a prompt set of two or more classes")
        index = []
        for label in labels:
            cls_name = prompt_set.class_lookup(label)
            if cls_name is None:
                raise VisionCLIPError(f"label '{label}' is not a class of the prompt set ({', '.join(prompt_set.classes)})")
            index.append(prompt_set.classes.index(cls_name))
        head = make_head(method, **params).fit(image_embeddings, index, TextAnchor.from_model(model, prompt_set))
        counts = np.bincount(np.asarray(index, dtype=int), minlength=len(prompt_set))
        return cls(head, prompt_set, model.model_id, dict(zip(prompt_set.classes, map(int, counts))), provenance)

    # --- inference ------------------------------------------------------------------------
    def check_model(self, model) -> None:
        if model.model_id != self.base_model_id:
            raise VisionCLIPError(f"this adapter was fitted on model {self.base_model_id}, not on {model.model_id}; "
                                  "refit it for this model")

    def logits(self, image_embeddings: torch.Tensor) -> torch.Tensor:
        return self.head.logits(image_embeddings)

    def probabilities(self, image_embeddings) -> torch.Tensor:
        """(N, C) adapted class probabilities, in ``self.classes`` order, from :meth:`encode`'s features."""
        return self.head.predict_proba(image_embeddings)

    def describe(self) -> dict:
        return {"method": self.method, "image_features": self.image_features, "base_model_id": self.base_model_id, "classes": self.classes,
                "images_per_class": self.images_per_class, "prompt_set_sha256": self.prompt_set.sha256,
                "provenance": self.provenance, "created_at": self.created_at}

    # --- file -----------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        path = Path(path)
        if path.suffix != ".safetensors":
            raise VisionCLIPError(f"an adapter file must end in .safetensors, not {path.name}")
        anchor = self.head.anchor
        tensors = {"anchor.embeddings": anchor.embeddings, "anchor.owner": anchor.owner.long(),
                   "anchor.logit_scale": torch.tensor([anchor.logit_scale])}
        tensors.update({f"head.{k}": v for k, v in self.head.state.items()})
        tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
        header = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "base_model_id": self.base_model_id,
                  "method": self.method, "image_features": self.image_features, "params": json.dumps(self.head.params),
                  "prompt_set": self.prompt_set.to_json(), "prompt_set_sha256": self.prompt_set.sha256,
                  "classes": json.dumps(self.classes), "images_per_class": json.dumps(self.images_per_class),
                  "provenance": json.dumps(self.provenance, sort_keys=True), "created_at": self.created_at}
        atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=header))
        return path

    @classmethod
    def load(cls, path: str | Path, model=None) -> "Adapter":
        """Read an adapter file; with ``model``, refuse it unless it was fitted on that model."""
        path = Path(path)
        if not path.is_file():
            raise VisionCLIPError(f"adapter file not found: {path}")
        try:
            header = read_header(path)
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise VisionCLIPError(f"{path.name} is not a readable adapter file ({str(e).splitlines()[0][:80]})") from None
        if header.get("format") != FORMAT:
            raise VisionCLIPError(f"{path.name} is not a VisionCLIP adapter (a model checkpoint? pass it as --model)")
        missing = [k for k in HEADER_KEYS if k not in header]
        if missing:
            raise VisionCLIPError(f"adapter {path.name} is incomplete: its header lacks {', '.join(missing)}")
        try:
            prompt_set = PromptSet.from_json_text(header["prompt_set"])
            classes, params = json.loads(header["classes"]), json.loads(header["params"])
            images, provenance = json.loads(header["images_per_class"]), json.loads(header["provenance"])
        except (json.JSONDecodeError, VisionCLIPError) as e:
            raise VisionCLIPError(f"adapter {path.name} has a damaged header ({e})") from None
        if prompt_set.sha256 != header["prompt_set_sha256"] or classes != prompt_set.classes:
            raise VisionCLIPError(f"adapter {path.name}: its prompt set does not match its recorded hash and classes")
        try:
            anchor = TextAnchor(tensors["anchor.embeddings"].float(), tensors["anchor.owner"].long(),
                                float(tensors["anchor.logit_scale"][0]), classes)
            state = {k.removeprefix("head."): v for k, v in tensors.items() if k.startswith("head.")}
        except KeyError as e:
            raise VisionCLIPError(f"adapter {path.name} lacks the tensor {e}") from None
        head = make_head(header["method"], **params).load_state(anchor, state)
        if header.get("image_features", "embedding") != head.image_features:
            raise VisionCLIPError(f"adapter {path.name}: its header says it reads {header.get('image_features')}, "
                                  f"its {head.method} head reads {head.image_features}")
        _check_shapes(path, head, anchor)
        adapter = cls(head, prompt_set, header["base_model_id"], images, provenance, header["created_at"])
        if model is not None:
            adapter.check_model(model)
        return adapter


def _check_shapes(path: Path, head: FewShotAdapter, anchor: TextAnchor) -> None:
    """A forward pass on a dummy embedding: a truncated or edited tensor fails here, not mid-analysis."""
    if len(anchor.owner) != len(anchor.embeddings) or int(anchor.owner.max()) + 1 != anchor.n_classes:
        raise VisionCLIPError(f"adapter {path.name}: its text anchor does not match its {anchor.n_classes} classes")
    try:
        out = head.logits(torch.zeros(1, head.input_dim()) + 1.0)
    except (RuntimeError, KeyError, IndexError, VisionCLIPError) as e:
        raise VisionCLIPError(f"adapter {path.name}: its {head.method} tensors are damaged ({str(e).splitlines()[0][:80]})") from None
    if out.shape != (1, anchor.n_classes) or not torch.isfinite(out).all():
        raise VisionCLIPError(f"adapter {path.name}: its {head.method} tensors are damaged")
