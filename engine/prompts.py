"""Prompt sets: class name -> free-text prompts, read from and written to JSON.

A file is either a plain object ``{"class": ["prompt", ...]}`` or ``{"name": ..., "description":
..., "classes": {...}}``. Class embeddings are the renormalised mean of the prompts' embeddings.

A class may instead hold named subclasses, ``{"class": {"subclass": ["prompt", ...], ...}}``: the
softmax then runs over every subclass, and a class's probability is the sum of its subclasses'
(hierarchical label sets, as in CHiLS, Novack et al., ICML 2023). A label set coarser than the
conditions the model was trained to tell apart is scored through those conditions, rather than
through one averaged text embedding that sits between them.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable, Mapping

from .errors import VisionCLIPError
from .resources import asset_dir
from .screening import ScreeningRule

PRESET_DIR = asset_dir("prompts")  # the installed package's copy, else the checkout's assets/prompts
DEFAULT_PRESET = "screening"
MAX_PROMPT_CHARS = 2000  # far beyond any text tower's context; longer is a paste accident
MAX_CLASSES = 200  # also the limit on subclasses, all classes together
MAX_PROMPT_FILE_BYTES = 2_000_000  # 200 classes x 10 prompts x 1000 characters; refused before it is read whole
SUBCLASS_SEPARATOR = " > "  # "class > subclass": how one subclass is named in a flat list (the app's table)


class PromptSet:
    """An ordered, validated mapping of class names to prompt texts."""

    def __init__(self, classes: Mapping[str, Iterable[str] | str | Mapping], name: str = "", description: str = "",
                 ordered: bool = False, screening: ScreeningRule | None = None):
        self.ordered = bool(ordered)  # classes form a grading scale (quadratic kappa applies)
        if not isinstance(classes, Mapping) or not classes:
            raise VisionCLIPError("prompt set is empty: give at least one class with one prompt")
        if len(classes) > MAX_CLASSES:
            raise VisionCLIPError(f"prompt set has {len(classes)} classes; the limit is {MAX_CLASSES}")
        self.name = name
        self.description = description
        self._classes: dict[str, list[str]] = {}  # class -> all its prompts, subclasses' included
        self._subclasses: dict[str, dict[str, list[str]]] = {}  # only the classes given as subclasses
        seen: dict[str, str] = {}
        for raw_name, prompts in classes.items():
            cls = _clean_name(raw_name, "class")
            if cls.lower() in seen:
                raise VisionCLIPError(f"duplicate class name '{cls}' in prompt set")
            seen[cls.lower()] = cls
            if isinstance(prompts, Mapping):
                if not prompts:
                    raise VisionCLIPError(f"class '{cls}' has no subclasses")
                subs: dict[str, list[str]] = {}
                for raw_sub, sub_prompts in prompts.items():
                    sub = _clean_name(raw_sub, f"class '{cls}': subclass")
                    if sub.lower() in {k.lower() for k in subs}:
                        raise VisionCLIPError(f"class '{cls}': duplicate subclass name '{sub}'")
                    subs[sub] = _clean_prompts(f"class '{cls}', subclass '{sub}'", sub_prompts)
                self._subclasses[cls] = subs
                self._classes[cls] = [p for v in subs.values() for p in v]
            else:
                self._classes[cls] = _clean_prompts(f"class '{cls}'", prompts)
        n_scored = len(self.scored_groups())
        if n_scored > MAX_CLASSES:
            raise VisionCLIPError(f"prompt set has {n_scored} classes and subclasses; the limit is {MAX_CLASSES}")
        if screening is not None:
            screening.check(self.classes)
        self.screening = screening  # engine.screening: how the set answers "normal or a finding?"

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
        return isinstance(other, PromptSet) and self.to_dict() == other.to_dict() and self.screening == other.screening

    def __repr__(self) -> str:
        return f"PromptSet({self.name or 'unnamed'}: {len(self)} classes)"

    def all_prompts(self) -> list[str]:
        return [p for prompts in self._classes.values() for p in prompts]

    @property
    def has_subclasses(self) -> bool:
        return bool(self._subclasses)

    def subclasses(self, cls: str) -> dict[str, list[str]]:
        """A class's subclasses and their prompts; a class without subclasses is its own only one."""
        return {k: list(v) for k, v in self._subclasses.get(cls, {cls: self._classes[cls]}).items()}

    def scored_groups(self) -> list[tuple[str, str, list[str]]]:
        """(class, subclass, prompts) for every embedding the softmax runs over, in class order."""
        return [(cls, sub, prompts) for cls in self._classes for sub, prompts in self.subclasses(cls).items()]

    def scored_names(self) -> list[str]:
        """Names of the scored groups, a subclass named "class > subclass"."""
        return [cls if cls not in self._subclasses else f"{cls}{SUBCLASS_SEPARATOR}{sub}"
                for cls, sub, _ in self.scored_groups()]

    def rows(self) -> list[tuple[str, str]]:
        """(name, prompt) per prompt, a subclass named "class > subclass": the set as a flat table."""
        return [(name, p) for name, (_, _, prompts) in zip(self.scored_names(), self.scored_groups()) for p in prompts]

    def to_dict(self) -> dict[str, list[str] | dict[str, list[str]]]:
        return {k: (self.subclasses(k) if k in self._subclasses else list(v)) for k, v in self._classes.items()}

    def subset(self, classes: Iterable[str]) -> "PromptSet":
        """The same prompts for the given classes only, in this set's order; the screening rule stays
        while its normal class does, without the excluded classes that are gone."""
        wanted = set(classes)
        return PromptSet({k: v for k, v in self.to_dict().items() if k in wanted}, self.name, self.description, self.ordered,
                         self._screening_within(wanted))

    def with_screening(self, screening: ScreeningRule | None) -> "PromptSet":
        return PromptSet(self.to_dict(), self.name, self.description, self.ordered, screening)

    def _screening_within(self, classes: set[str]) -> ScreeningRule | None:
        rule = self.screening
        lowered = {c.lower() for c in classes}
        if rule is None or rule.normal.lower() not in lowered:
            return None
        return ScreeningRule(rule.normal, tuple(c for c in rule.excluded if c.lower() in lowered), rule.thresholds,
                             rule.calibration)

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
        if self.screening is not None:
            doc["screening"] = self.screening.to_dict()
        return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"

    @property
    def sha256(self) -> str:
        """Hash of the classes, prompts and screening rule (not name/description): what decides predictions."""
        doc = self.to_dict() if self.screening is None else {"classes": self.to_dict(), "screening": self.screening.to_dict()}
        canonical = json.dumps(doc, sort_keys=False, ensure_ascii=False, separators=(",", ":"))
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
            screening = ScreeningRule.from_dict(doc["screening"]) if doc.get("screening") is not None else None
            return cls(doc["classes"], name=str(doc.get("name") or name), description=str(doc.get("description") or ""),
                       ordered=bool(doc.get("ordered", False)), screening=screening)
        return cls(doc, name=name)

    @classmethod
    def from_json_text(cls, text: str, name: str = "") -> "PromptSet":
        if len(text) > MAX_PROMPT_FILE_BYTES:
            raise VisionCLIPError(f"prompt set{' ' + name if name else ''} is too large "
                                  f"({len(text):,} characters; the limit is {MAX_PROMPT_FILE_BYTES:,})")

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
        except RecursionError:  # "[[[[..." thousands deep
            raise VisionCLIPError(f"prompt set{' ' + name if name else ''} is nested too deeply to be a prompt set") from None
        return cls.from_dict(doc, name=name)

    @classmethod
    def from_json(cls, path: str | Path) -> "PromptSet":
        path = Path(path)
        if not path.is_file():
            raise VisionCLIPError(f"prompt set file not found: {path}")
        size = path.stat().st_size
        if size > MAX_PROMPT_FILE_BYTES:
            raise VisionCLIPError(f"prompt set {path.name} is too large ({size:,} bytes; the limit is "
                                  f"{MAX_PROMPT_FILE_BYTES:,})")
        try:
            with path.open("rb") as fh:  # bounded read: the size on disk may change or lie (/proc, FIFOs)
                data = fh.read(MAX_PROMPT_FILE_BYTES + 1)
            if len(data) > MAX_PROMPT_FILE_BYTES:
                raise VisionCLIPError(f"prompt set {path.name} is too large (the limit is {MAX_PROMPT_FILE_BYTES:,} bytes)")
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise VisionCLIPError(f"prompt set {path.name} is not UTF-8 text") from None
        except OSError as e:
            raise VisionCLIPError(f"prompt set {path.name} cannot be read ({e.strerror or type(e).__name__})") from None
        return cls.from_json_text(text, name=path.stem)


def _valid_unicode(text: str, what: str) -> str:
    """Lone surrogates (a JSON payload can carry "\\ud800") cannot be stored, hashed or tokenised."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise VisionCLIPError(f"prompt set {what} holds characters that are not valid Unicode text") from None
    return text


def _clean_name(raw, what: str) -> str:
    name = _valid_unicode(" ".join(str(raw).split()), what)
    if not name:
        raise VisionCLIPError(f"prompt set has a {what} with a blank name")
    if SUBCLASS_SEPARATOR in name:
        raise VisionCLIPError(f"prompt set {what} '{name}': '{SUBCLASS_SEPARATOR.strip()}' between spaces is "
                              "reserved for naming subclasses")
    return name


def _clean_prompts(owner: str, prompts) -> list[str]:
    if isinstance(prompts, str):
        prompts = [prompts]
    if not isinstance(prompts, Iterable):
        raise VisionCLIPError(f"{owner}: prompts must be a list of texts")
    cleaned = []
    for p in prompts:
        if not isinstance(p, str):
            raise VisionCLIPError(f"{owner}: prompt {p!r} is not text")
        text = _valid_unicode(" ".join(p.split()), f"{owner}: a prompt")
        if not text:
            raise VisionCLIPError(f"{owner} has a blank prompt")
        if len(text) > MAX_PROMPT_CHARS:
            raise VisionCLIPError(f"{owner}: a prompt is {len(text)} characters long; the limit is {MAX_PROMPT_CHARS}")
        cleaned.append(text)
    if not cleaned:
        raise VisionCLIPError(f"{owner} has no prompts")
    return cleaned


def list_presets() -> list[str]:
    """Names of the shipped prompt sets (assets/prompts/)."""
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
