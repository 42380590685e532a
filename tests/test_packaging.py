"""The installed package: no process-wide state on import, and a wheel that works outside the checkout."""
import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from engine import VisionCLIPError
from engine import resources

ROOT = Path(__file__).resolve().parent.parent

# Third-party libraries set a few variables of their own on import (cv2 LD_LIBRARY_PATH, torch's
# inductor cache, open_clip's TOKENIZERS_PARALLELISM, scikit-learn's KMP_*): they are imported first, so only what
# importing engine itself changes is compared.
IMPORT_STATE = """
import json, os, sys
import cv2, torch, open_clip, transformers, sklearn
before, threads = dict(os.environ), cv2.getNumThreads()
import engine, engine.cli, engine.model, engine.synth.render, engine.synth.writer
engine.cli.build_parser()  # imports every subcommand's module
changed = {k: os.environ.get(k) for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k)}
print(json.dumps({"changed": changed, "threads_before": threads, "threads_after": cv2.getNumThreads()}))
"""


def test_importing_engine_changes_no_process_wide_state():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run([sys.executable, "-c", IMPORT_STATE], capture_output=True, text=True, env=env,
                         timeout=300, check=True).stdout
    state = json.loads(out.strip().splitlines()[-1])
    assert state["changed"] == {}
    assert state["threads_after"] == state["threads_before"]


def test_text_tower_must_be_a_local_folder():
    from engine.factory import create_model, load_model_config

    cfg = load_model_config("visionclip-effl0-minilm")
    cfg["text_cfg"]["hf_model_name"] = "sentence-transformers/all-MiniLM-L6-v2"  # a hub id, not a folder
    with pytest.raises(VisionCLIPError, match="local folders only"):
        create_model(cfg, pretrained_towers=False)


def test_model_env_var_overrides_and_missing_model_says_where_to_put_it(tmp_path, monkeypatch):
    ckpt = tmp_path / "mine.safetensors"
    ckpt.write_bytes(b"x")
    monkeypatch.setenv(resources.MODEL_ENV, str(ckpt))
    assert resources.default_model_path() == ckpt
    monkeypatch.setenv(resources.MODEL_ENV, str(tmp_path / "absent.safetensors"))
    with pytest.raises(VisionCLIPError, match="VISIONCLIP_MODEL=.*no such"):
        resources.default_model_path()
    monkeypatch.delenv(resources.MODEL_ENV)
    monkeypatch.setattr(resources, "asset_dir", lambda name: tmp_path / "nowhere" / name)
    with pytest.raises(VisionCLIPError, match=r"put visionclip.safetensors in .*VISIONCLIP_MODEL.*--model"):
        resources.default_model_path()


def _copy_sources(dest: Path) -> None:
    """The checkout's tracked and new files (not build outputs), so the build leaves the checkout clean."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout.splitlines()
    for rel in listed:
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


@pytest.mark.slow
def test_wheel_installs_and_predicts_outside_the_checkout(tmp_path):
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout to list the sources")
    src, wheels, work = tmp_path / "src", tmp_path / "wheels", tmp_path / "elsewhere"
    src.mkdir(), work.mkdir()
    _copy_sources(src)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels),
                    str(src)], check=True, capture_output=True, timeout=600)
    wheel = next(wheels.glob("visionclip-*.whl"))
    venv.create(tmp_path / "venv", system_site_packages=True, with_pip=True)
    bin_dir = tmp_path / "venv" / ("Scripts" if os.name == "nt" else "bin")
    # Outside the checkout: no PYTHONPATH to it, and the system's (editable) visionclip not taken as installed.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", resources.MODEL_ENV)}
    subprocess.run([str(bin_dir / "python"), "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed",
                    "-q", str(wheel)], check=True, capture_output=True, timeout=600, cwd=work, env=env)
    shutil.copy(ROOT / "assets" / "examples" / "synthetic_dr_12.png", work / "eye.png")
    where = subprocess.run([str(bin_dir / "python"), "-c", "import engine, engine.prompts as p; "
                            "print(engine.__file__); print(p.list_presets())"],
                           cwd=work, env=env, capture_output=True, text=True, check=True, timeout=300).stdout
    assert str(tmp_path / "venv") in where.splitlines()[0]  # the wheel's copy, not the checkout
    assert "screening" in where.splitlines()[1]
    run = subprocess.run([str(bin_dir / "visionclip"), "predict", "eye.png", "--prompts", "screening", "--json"],
                         cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)["results"][0]
    assert result["predicted"] in result["probabilities"] and "error" not in result
    assert str(tmp_path / "venv") in json.loads(run.stdout)["checkpoint"]  # the shipped model, from the wheel
