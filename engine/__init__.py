"""VisionCLIP engine: a CLIP-style retina model trained on synthetic fundus photographs.

Public API::

    from engine import VisionCLIP, PromptSet, load_image
    model = VisionCLIP.load()                      # the embedded default model
    probs = model.classify(["eye.jpg"], load_preset("screening"))
"""
__version__ = "0.1.0"

from .errors import VisionCLIPError
from .factory import create_model, create_tokenizer, list_model_configs
from .model import VisionCLIP
from .preprocess import FundusTransform, load_image, load_image_with_meta
from .prompts import PromptSet, list_presets, load_preset, load_prompt_set
from .prompts import DEFAULT_PRESET, SUBCLASS_SEPARATOR
from .quality import assess_quality

__all__ = [
    "VisionCLIP", "VisionCLIPError", "PromptSet", "FundusTransform", "load_image", "load_image_with_meta", "load_preset",
    "load_prompt_set", "list_presets", "create_model", "create_tokenizer", "list_model_configs", "__version__",
    "DEFAULT_PRESET", "SUBCLASS_SEPARATOR", "assess_quality",
]
