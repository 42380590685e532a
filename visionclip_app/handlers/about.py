"""The About tab: intended use, the data card from the model's metadata, a model-card summary, versions."""
from __future__ import annotations

import json
import platform
from importlib import metadata
from pathlib import Path

import gradio as gr

from engine.resources import asset_dir

from .common import AppContext

MODEL_CARD = asset_dir("model") / "MODEL_CARD.md"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
NO_CARD = "_No model card shipped with this build (assets/model/MODEL_CARD.md)._"
INTENDED_USE = (
    "VisionCLIP is for **research and demonstration only. It is not a medical device** and must not be "
    "used for diagnosis, screening or treatment decisions. It was trained **only on synthetic fundus "
    "images**; its zero-shot outputs on real photographs can be wrong in ways that are not obvious, "
    "depend strongly on the wording of the prompts, and have not been clinically validated. Grad-CAM "
    "maps show what influenced the score, not where disease is.")
PRIVACY = ("Cases are stored in a local SQLite file with the image hash and a metadata-free thumbnail. "
           "File names and patient identifiers are stored only when the reviewer ticks the opt-in box.")


def example_images(ctx: AppContext) -> list[str]:
    d = ctx.examples_dir
    return sorted(str(p) for p in d.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if d.is_dir() else []


def example_captions(ctx: AppContext) -> list[tuple[str, str]]:
    caps = {}
    f = ctx.examples_dir / "captions.json"
    if f.is_file():
        try:
            caps = json.loads(f.read_text(encoding="utf-8"))
        except ValueError:
            caps = {}
    return [(p, caps.get(Path(p).name, "synthetic fundus")) for p in example_images(ctx)]


def model_card_text(card: Path = MODEL_CARD) -> str | None:
    return card.read_text(encoding="utf-8") if card.is_file() else None


def model_card_summary(card: Path = MODEL_CARD) -> str:
    """The card's title and first section (its summary), headings demoted below the About tab's own."""
    text = model_card_text(card)
    if text is None:
        return NO_CARD
    head = "\n## ".join(text.split("\n## ", 2)[:2]).strip()
    return "\n".join("#" * 2 + ln if ln.startswith("#") else ln for ln in head.splitlines())


def data_card_lines(meta: dict, model_id: str) -> list[str]:
    td = meta.get("training_data") or {}
    lines = [f"- Training data: **100% synthetic** fundus images "
             f"({td.get('synthetic_images', td.get('synthetic_images_seen', 'unknown'))} images seen in training)",
             f"- Real patient images used for training: **{td.get('real_patient_images', 0)}**",
             f"- Generator version: {td.get('generator_version') or td.get('generator') or 'n/a'}",
             f"- Model id: `{model_id}` · trained: {meta.get('trained', 'unknown')}"]
    shown = ("synthetic_images", "synthetic_images_seen", "real_patient_images", "generator_version", "generator")
    for k, v in td.items():
        if k not in shown:
            lines.append(f"- {k.replace('_', ' ')}: {v if not isinstance(v, (dict, list)) else json.dumps(v)[:300]}")
    return lines


def _version(distribution: str) -> str:
    """An installed distribution's version, read from its metadata: importing open_clip takes seconds."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def about_markdown(ctx: AppContext, card: Path = MODEL_CARD) -> str:
    """The About tab's text; the full model card is shown on demand (``model_card_text``)."""
    import torch

    import engine
    parts = ["## Intended use and limitations", INTENDED_USE,
             "## Data card", "\n".join(data_card_lines(ctx.model.metadata or {}, ctx.model.model_id)),
             "## Model card (summary)", model_card_summary(card),
             "## Privacy", PRIVACY,
             "## Versions",
             f"engine {engine.__version__} · gradio {gr.__version__} · torch {torch.__version__} · "
             f"open_clip {_version('open_clip_torch')} · Python {platform.python_version()} · "
             f"case-store schema v{ctx.store.schema_version}"]
    return "\n\n".join(parts)
