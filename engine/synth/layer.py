"""The layer interface and registry: one small class per anatomical structure, finding or camera effect.

A layer says whether it applies to a case and draws onto the canvas from its own random stream.
It registers under a name with the caption words of the findings it can record, so adding a finding
is one file: a module in anatomy/, findings/ or camera/ with a ``@register`` class.
"""
from __future__ import annotations

from typing import ClassVar

import numpy as np

from engine.errors import VisionCLIPError

LAYERS: dict[str, type["Layer"]] = {}
FINDING_WORDS: dict[str, list[str]] = {}  # finding name -> caption phrasings, filled by the layers


class Layer:
    """Base class. Subclasses set ``name``, optional ``words`` and ``params`` defaults, and override
    ``applies`` and ``draw``. ``self.p`` holds the defaults updated with a pipeline's overrides."""

    name: ClassVar[str] = ""
    words: ClassVar[dict[str, list[str]]] = {}   # finding name -> caption phrasings
    params: ClassVar[dict] = {}

    def __init__(self, **overrides):
        unknown = set(overrides) - set(self.params)
        if unknown:
            raise VisionCLIPError(f"Layer {self.name!r} has no parameter(s) {', '.join(sorted(unknown))}.")
        self.p = {**self.params, **overrides}

    def applies(self, case) -> bool:
        return True

    def draw(self, eye, canvas, rng: np.random.Generator) -> None:
        raise NotImplementedError


def register(cls: type[Layer]) -> type[Layer]:
    """Class decorator: add a layer to the registry under ``cls.name`` with its caption words."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    if cls.name in LAYERS and LAYERS[cls.name] is not cls:
        raise ValueError(f"layer name {cls.name!r} registered twice")
    LAYERS[cls.name] = cls
    for finding, phrases in cls.words.items():
        FINDING_WORDS.setdefault(finding, list(phrases))
    return cls
