"""Few-shot adapters over frozen VisionCLIP image embeddings.

    from engine.adapt import Adapter
    emb = model.encode_images(paths)
    adapter = Adapter.fit(model, emb, labels, prompt_set, method="clap", provenance={...})
    adapter.save("mine.safetensors")
    Adapter.load("mine.safetensors", model).probabilities(model.encode_images(["eye.jpg"]))

Methods: ``clap-stage`` (the CLI's and the app's default where the tower allows: ``default_method(model)``;
CLAP over the tower's mid-level features too: ``feats = engine.adapt.encode_for(model, paths, "clap-stage")``),
``clap`` (``DEFAULT_METHOD`` for embeddings alone; text-initialised, class-wise anchored to the text), ``blend`` (training-free
text + visual prototypes), ``linear-probe`` and ``zero-shot`` (baselines). The base model is never changed.
"""
from .base import FewShotAdapter, TextAnchor
from .file import DEFAULT_METHOD, METHODS, Adapter, default_method, encode_for, make_head
from .scoring import class_probabilities

__all__ = ["Adapter", "FewShotAdapter", "TextAnchor", "METHODS", "DEFAULT_METHOD", "class_probabilities", "default_method", "encode_for", "make_head"]
