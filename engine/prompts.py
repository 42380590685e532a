"""Prompt sets: class name -> free-text prompts, read from and written to JSON.

A file is either a plain object ``{"class": ["prompt", ...]}`` or ``{"name": ..., "description":
..., "classes": {...}}``. Class embeddings are the renormalised mean of the prompts' embeddings.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable, Mapping

from .errors import VisionCLIPError

PRESET_DIR = Path(__file__).resolve().parent.parent / "assets" / "prompts"
DEFAULT_PRESET = "screening"
MAX_PROMPT_CHARS = 2000  # far beyond any text tower's context; longer is a paste accident
MAX_CLASSES = 200


class PromptSet:
    """An ordered, validated mapping of class names to prompt texts."""

    def __init__(self, classes: Mapping[str, Iterable[str] | str], name: str = "", description: str = "",
                 ordered: bool = False):
        self.ordered = bool(ordered)  # classes form a grading scale (quadratic kappa applies)
        if not isinstance(classes, Mapping) or not classes:
            raise VisionCLIPError("prompt set is empty: give at least one class with one prompt")
        if len(classes) > MAX_CLASSES:
            raise VisionCLIPError(f"prompt set has {len(classes)} classes; the limit is {MAX_CLASSES}")
        self.name = name
        self.description = description
        self._classes: dict[str, list[str]] = {}
        seen: dict[str, str] = {}
        for raw_name, prompts in classes.items():
            cls = " ".join(str(raw_name).split())
            if not cls:
                raise VisionCLIPError("prompt set has a class with a blank name")
            key = cls.lower()
            if key in seen:
                raise VisionCLIPError(f"duplicate class name '{cls}' in prompt set")
            seen[key] = cls
            if isinstance(prompts, str):
                prompts = [prompts]
            if not isinstance(prompts, Iterable):
                raise VisionCLIPError(f"class '{cls}': prompts must be a list of texts")
            cleaned = []
            for p in prompts:
                if not isinstance(p, str):
                    raise VisionCLIPError(f"class '{cls}': prompt {p!r} is not text")
                text = " ".join(p.split())
                if not text:
                    raise VisionCLIPError(f"class '{cls}' has a blank prompt")
                if len(text) > MAX_PROMPT_CHARS:
                    raise VisionCLIPError(
                        f"class '{cls}': a prompt is {len(text)} characters long; the limit is {MAX_PROMPT_CHARS}"
                    )
                cleaned.append(text)
            if not cleaned:
                raise VisionCLIPError(f"class '{cls}' has no prompts")
            self._classes[cls] = cleaned

    # --- mapping-like access -------------------------------------------------------------
    @property
    def classes(self) -> list[str]:
        return list(self._classes)

    def __getitem__(self, cls: str) -> list[str]:
        return list(self._classes[cls])

    def __contains__(self, cls: str) -> bool:
        return cls in self._classes

    def __len__(self) -> int:
        return len(self._classes)

    def __iter__(self):
        return iter(self._classes)

    def items(self):
        return [(k, list(v)) for k, v in self._classes.items()]

    def __eq__(self, other) -> bool:
        return isinstance(other, PromptSet) and self._classes == other._classes

    def __repr__(self) -> str:
        return f"PromptSet({self.name or 'unnamed'}: {len(self)} classes)"

    def all_prompts(self) -> list[str]:
        return [p for prompts in self._classes.values() for p in prompts]

    def to_dict(self) -> dict[str, list[str]]:
        return {k: list(v) for k, v in self._classes.items()}

    def subset(self, classes: Iterable[str]) -> "PromptSet":
        """The same prompts for the given classes only, in this set's order."""
        wanted = set(classes)
        return PromptSet({k: v for k, v in self._classes.items() if k in wanted}, self.name, self.description, self.ordered)

    def class_lookup(self, label: str) -> str | None:
        """The class matching a label case- and space-insensitively, if any."""
        key = " ".join(str(label).split()).lower()
        for cls in self._classes:
            if cls.lower() == key:
                return cls
        return None

    # --- serialisation -------------------------------------------------------------------
    def to_json(self) -> str:
        doc = {"name": self.name, "description": self.description, "classes": self.to_dict()}
        if self.ordered:
            doc["ordered"] = True
        return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"

    @property
    def sha256(self) -> str:
        """Hash of the classes and prompts only (not name/description): what decides predictions."""
        canonical = json.dumps(self.to_dict(), sort_keys=False, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(self.to_json(), encoding="utf-8")
        tmp.replace(path)
        return path

    @classmethod
    def from_dict(cls, doc: Mapping, name: str = "") -> "PromptSet":
        if not isinstance(doc, Mapping):
            raise VisionCLIPError("prompt set must be a JSON object mapping class names to lists of prompts")
        if "classes" in doc and isinstance(doc["classes"], Mapping):
            return cls(doc["classes"], name=str(doc.get("name") or name), description=str(doc.get("description") or ""),
                       ordered=bool(doc.get("ordered", False)))
        return cls(doc, name=name)

    @classmethod
    def from_json_text(cls, text: str, name: str = "") -> "PromptSet":
        def no_duplicates(pairs):
            keys = [k for k, _ in pairs]
            dupes = {k for k in keys if keys.count(k) > 1}
            if dupes:
                raise VisionCLIPError(f"duplicate class name '{sorted(dupes)[0]}' in prompt set")
            return dict(pairs)

        try:
            doc = json.loads(text, object_pairs_hook=no_duplicates)
        except json.JSONDecodeError as e:
            raise VisionCLIPError(f"prompt set{' ' + name if name else ''} is not valid JSON: {e.msg} at line {e.lineno}") from None
        return cls.from_dict(doc, name=name)

    @classmethod
    def from_json(cls, path: str | Path) -> "PromptSet":
        path = Path(path)
        if not path.is_file():
            raise VisionCLIPError(f"prompt set file not found: {path}")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise VisionCLIPError(f"prompt set {path.name} is not UTF-8 text") from None
        return cls.from_json_text(text, name=path.stem)


def list_presets() -> list[str]:
    """Names of the prompt sets shipped in assets/prompts/."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))


def load_preset(name: str = DEFAULT_PRESET) -> PromptSet:
    path = PRESET_DIR / f"{name}.json"
    if not path.is_file():
        raise VisionCLIPError(f"unknown prompt preset '{name}'; choose one of: {', '.join(list_presets())}")
    return PromptSet.from_json(path)


def load_prompt_set(spec: str | Path | None) -> PromptSet:
    """A prompt set from a file path or a preset name; the default screening set for None."""
    if spec is None:
        return load_preset(DEFAULT_PRESET)
    if str(spec) in list_presets():
        return load_preset(str(spec))
    return PromptSet.from_json(spec)
