"""The About tab: the model's data card, a summary of the shipped model card, the full card on demand."""
from __future__ import annotations

from pathlib import Path

from visionclip_app import handlers as h
from visionclip_app.handlers import about


def test_about_shows_the_card_headline_not_the_whole_card(ctx, tmp_path):
    card = tmp_path / "MODEL_CARD.md"
    card.write_text("# Model card: test model\n\n## Summary\n\n- **Use:** testing only.\n\n## Training\n\nlong details\n")
    md = h.about_markdown(ctx, card)
    assert "### Model card: test model" in md and "#### Summary" in md and "testing only" in md
    assert "long details" not in md and "# Training" not in md
    assert h.model_card_text(card) == card.read_text()
    assert about.NO_CARD in h.about_markdown(ctx, tmp_path / "missing.md")
    assert h.model_card_text(tmp_path / "missing.md") is None


def test_shipped_card_describes_the_shipped_model(ctx):
    """The card's headline names the model the app serves, and the summary is a small part of the card."""
    summary, full = h.model_card_summary(), h.model_card_text()
    assert full is not None and ctx.model.model_id in summary
    assert len(summary) < len(full) / 3


def test_data_card_comes_from_the_model_metadata():
    meta = {"training_data": {"synthetic_images": 1234, "real_patient_images": 0, "generator_version": "g9",
                              "resolution": 320}, "trained": "2026-01-01"}
    lines = "\n".join(about.data_card_lines(meta, "model-x"))
    assert "1234 images" in lines and "**0**" in lines and "g9" in lines and "`model-x`" in lines
    assert "resolution: 320" in lines


def test_examples_have_captions(ctx):
    caps = h.example_captions(ctx)
    assert caps and all(Path(p).is_file() for p, _ in caps)
