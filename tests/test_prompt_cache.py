"""Stored prompt embeddings (engine.prompt_cache): shipped presets score without the text tower."""
import shutil

import torch

from engine import VisionCLIP, load_preset
from engine.checkpoint import checkpoint_file
from engine.prompt_cache import PROMPT_CACHE_FILE, preset_prompts, read_prompt_embeddings, write_preset_embeddings
from engine.resources import default_model_path


def test_shipped_presets_need_no_text_tower_and_match_it():
    model = VisionCLIP.load()
    stored = model.encode_texts(preset_prompts())
    assert model.text_encodings == 0 and model._tokenizer is None  # neither tower nor tokenizer was needed
    encoded = model.encode_texts(preset_prompts(), use_stored=False)
    assert model.text_encodings == len(preset_prompts())
    assert (stored - encoded).abs().max() < 1e-5  # the file holds this model's own embeddings
    model.encode_texts(["an edited prompt no preset has"])
    assert model.text_encodings == len(preset_prompts()) + 1  # an edited prompt still goes through the tower


def test_a_cache_for_other_weights_is_ignored_and_a_folder_still_names_its_checkpoint(tmp_path, untrained_model):
    folder = tmp_path / "model"
    folder.mkdir()
    shutil.copy(default_model_path(), folder / "visionclip.safetensors")
    write_preset_embeddings(untrained_model, folder / PROMPT_CACHE_FILE)  # written by another model
    assert checkpoint_file(folder).name == "visionclip.safetensors"  # the cache is not taken for weights
    model = VisionCLIP.load(folder)
    assert read_prompt_embeddings(folder / PROMPT_CACHE_FILE, model.model_id) == {}
    model.scored_embeddings(load_preset("screening"))
    assert model.text_encodings == len(load_preset("screening").all_prompts())


def test_the_text_tower_is_restored_only_when_a_prompt_needs_it(tmp_path):
    model = VisionCLIP.load()
    assert model._pending_text is not None  # the shipped checkpoint is lean: its text tower waits
    model.classify([default_model_path().parent.parent / "examples" / "synthetic_dr_12.png"], load_preset("screening"))
    assert model._pending_text is not None and model.text_encodings == 0
    edited = model.encode_texts(["an edited prompt no preset has"])
    assert model._pending_text is None  # restored from the package, after its hash check
    eager = VisionCLIP.load()
    eager.network  # restores at once
    assert (eager.encode_texts(["an edited prompt no preset has"]) - edited).abs().max() < 1e-6
    # saving restores it too: the same file as from a model whose tower was restored at once
    assert VisionCLIP.load().save(tmp_path / "lazy.safetensors") == eager.save(tmp_path / "eager.safetensors")
