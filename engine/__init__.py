"""VisionCLIP engine: a CLIP-style retina model trained on synthetic fundus photographs.

Public API::

    from engine import VisionCLIP, PromptSet, load_image
    model = VisionCLIP.load()                      # the embedded default model
    probs = model.classify(["eye.jpg"], load_preset("screening"))
"""
__version__ = "0.1.0"

import importlib

from .errors import VisionCLIPError

# The names below are imported on first use (PEP 562): the model's modules import torch (seconds),
# which ``visionclip --help``, argument errors and the app's first page do not need.
_EXPORTS = {
    "create_model": "factory", "create_tokenizer": "factory", "list_model_configs": "factory",
    "VisionCLIP": "model",
    "FundusTransform": "preprocess", "load_image": "preprocess", "load_image_with_meta": "preprocess",
    "PromptSet": "prompts", "list_presets": "prompts", "load_preset": "prompts", "load_prompt_set": "prompts",
    "DEFAULT_PRESET": "prompts", "SUBCLASS_SEPARATOR": "prompts",
    "assess_quality": "quality",
}

__all__ = ["VisionCLIPError", "__version__", *_EXPORTS]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
