"""Training program: config checks, data sources, losses, exact resume after SIGKILL, DDP parity."""
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from engine import VisionCLIP, VisionCLIPError
from engine.factory import list_model_configs
from engine.train.loss import SoftLabelClipLoss
from engine.train.params import config_from_dict, load_config, parse_overrides

from .conftest import forkserver_processes, make_fundus
from .local_server import free_port

TINY = {
    "image_size": 64,
    "sources": [{"type": "synthetic", "seed": 0, "size": 64}],
    "steps": 4,
    "batch_size": 4,
    "workers": 0,
    "warmup_steps": 1,
    "save_every": 2,
    "val_synthetic": 0,
    "log_every": 1,
    "freeze_bn_stats": True,
    "image_dropout": 0.0,
}


def write_config(path: Path, **overrides) -> Path:
    path.write_text(yaml.safe_dump({**TINY, **overrides}))
    return path


def train_cli(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "engine.cli", "train", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


@pytest.fixture(params=["in-process", pytest.param("subprocess", marks=pytest.mark.slow)])
def train_run(request, monkeypatch, capsys):
    """``visionclip train``: in this process (the fast tier; short runs) or in a fresh one (the full suite)."""
    if request.param == "subprocess":
        yield train_cli
        return
    from engine import memory
    from engine.train import main as train_main

    monkeypatch.setattr(memory, "keep_freed_memory", lambda: None)  # no process-wide malloc tuning in the worker

    def run(*args, **_):
        capsys.readouterr()
        code = train_main.main([str(a) for a in args])
        out, err = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=out, stderr=err)
    rng = torch.get_rng_state()
    yield run
    torch.set_rng_state(rng)  # training seeds torch: later tests in this worker see what they would have


def metrics(run: Path) -> list[dict]:
    return [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if '"loss"' in l]


# --- config and data checks: one clear line before any work -----------------------------------
@pytest.mark.parametrize(
    "doc, message",
    [
        ({"stepz": 3}, "unknown key 'stepz' \\(did you mean 'steps'\\?\\)"),
        ({"steps": "many"}, "'steps' must be int"),
        ({"batch_size": 1}, "at least 2"),
        ({"loss": "hinge"}, "loss must be"),
        ({"sources": [{"type": "pictures"}]}, "needs a type"),
        ({"sources": [{"type": "synthetic", "colour": 1}]}, "unknown keys: colour"),
        ({"colour_jitter": 1.5}, "colour_jitter must be in"),
        ({"hue_jitter": -0.1}, "hue_jitter must be in"),
        ({"local_contrast": "yes"}, "'local_contrast' must be"),
        ({"colour_normalise": True}, "'colour_normalise' must be str"),
        ({"colour_normalise": "always"}, "colour_normalise must be one of off, inference, both"),
        # options whose trials lost were removed (research/train_options/README.md): now unknown keys
        ({"degrade": 0.5}, "unknown key 'degrade'"),
        ({"mixstyle": 0.5}, "unknown key 'mixstyle'"),
        ({"head_only_steps": 5}, "unknown key 'head_only_steps'"),
        ({"mask_loss_weight": 0.1}, "unknown key 'mask_loss_weight'"),
        ({"ema_decay": 1.0}, "ema_decay must be in \\(0, 1\\)"),
        ({"ema_decay": "slow"}, "'ema_decay' must be"),
        ({"val_pipeline": "v9"}, "val_pipeline must be one of v1, v2"),
    ],
)
def test_bad_config_values(doc, message):
    with pytest.raises(VisionCLIPError, match=message):
        config_from_dict(doc)


REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_committed_configs_load(path):
    """The shipped recipe and the other configs beside it pass the config checks (trials are research records)."""
    cfg = load_config(path)
    assert cfg.model in list_model_configs()


def test_config_inherits_from_its_base_and_overrides_win(tmp_path):
    (tmp_path / "trials").mkdir()
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({**TINY, "lr": 0.01, "seed": 3}))
    (tmp_path / "trials" / "t.yaml").write_text("base: ../base.yaml\nseed: 7\n")
    cfg = load_config(tmp_path / "trials" / "t.yaml")
    assert (cfg.seed, cfg.lr, cfg.steps) == (7, 0.01, TINY["steps"])  # own key, base key, base key
    over = load_config(tmp_path / "trials" / "t.yaml", parse_overrides(["seed=9", "ema_decay=0.99", "image_dropout=null",
                                                                        "colour_normalise=off", "augment=false"]))
    assert (over.seed, over.ema_decay, over.image_dropout, over.colour_normalise, over.augment) == (9, 0.99, None, "off", False)


def test_validation_set_is_drawn_from_the_configured_pipeline():
    from engine.train.train import synthetic_validation_set
    v1 = synthetic_validation_set(config_from_dict({**TINY, "val_synthetic": 12}), 64)
    v2 = synthetic_validation_set(config_from_dict({**TINY, "val_synthetic": 12, "val_pipeline": "v2"}), 64)
    assert "central serous chorioretinopathy" not in v1[1] and "central serous chorioretinopathy" in v2[1]
    assert not np.array_equal(v1[0][0], v2[0][0])


@pytest.mark.parametrize(
    "files, message",
    [
        ({"a.yaml": "base: b.yaml\n", "b.yaml": "base: a.yaml\n"}, "base cycle a.yaml -> b.yaml -> a.yaml"),
        ({"a.yaml": "base: a.yaml\n"}, "base cycle a.yaml -> a.yaml"),
        ({"a.yaml": "base: nowhere.yaml\n"}, "base config not found"),
        ({"a.yaml": "base: [1]\n"}, "'base' must be a path"),
        ({"a.yaml": "- 1\n"}, "must hold a mapping"),
    ],
)
def test_broken_base_chains_are_one_line_errors(tmp_path, files, message):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(VisionCLIPError, match=message):
        load_config(tmp_path / "a.yaml")


@pytest.mark.parametrize(
    "items, message",
    [
        (["stepz=3"], "unknown key 'stepz' \\(did you mean 'steps'\\?\\)"),
        (["steps=many"], "'steps' must be int"),
        (["steps"], "--set needs key=value"),
        (["lr=[1,"], "--set lr: value cannot be parsed"),
    ],
)
def test_bad_set_overrides(tmp_path, items, message):
    with pytest.raises(VisionCLIPError, match=message):
        load_config(write_config(tmp_path / "c.yaml"), parse_overrides(items))


@pytest.mark.slow
def test_set_on_the_command_line_reaches_the_run(tmp_path):
    r = train_cli("--config", write_config(tmp_path / "c.yaml", steps=1), "--out", tmp_path / "run", "--set", "steps=2",
                  "--set", "lr=0.001")
    assert r.returncode == 0, r.stderr
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (saved["steps"], saved["lr"]) == (2, 0.001)
    assert "--set steps=2" in VisionCLIP.load(tmp_path / "run" / "model.safetensors").metadata["training_command"]
    r = train_cli("--config", tmp_path / "c.yaml", "--out", tmp_path / "run2", "--set", "stepz=2")
    assert r.returncode == 2 and "did you mean 'steps'" in r.stderr and "Traceback" not in r.stderr


def test_unreadable_config_file(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text("steps: [1, 2\n")
    with pytest.raises(VisionCLIPError, match="cannot be parsed"):
        load_config(bad)
    with pytest.raises(VisionCLIPError, match="not found"):
        load_config(tmp_path / "none.yaml")


def _csv_dataset(tmp_path: Path, n: int, corrupt: int = 0) -> Path:
    rows = []
    for i in range(n):
        p = tmp_path / f"{i}.png"
        if i < corrupt:
            p.write_bytes(b"\x89PNG broken")
        else:
            make_fundus(size=(80, 80), seed=i).save(p)
        rows.append({"path": p.name, "caption": f"fundus photograph number {i}"})
    with (tmp_path / "pairs.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, ["path", "caption"])
        w.writeheader()
        w.writerows(rows)
    return tmp_path / "pairs.csv"


@pytest.mark.parametrize(
    "make_args, message",
    [
        (lambda t: ["--out", t / "run", "--resume"], "nothing to resume"),
        (lambda t: ["--out", t / "afile" / "run"], "not writable"),
        (lambda t: ["--out", t / "run", "--eval-data", t / "nowhere"], "no labels.csv"),
    ],
)
def test_bad_run_folders(train_run, tmp_path, make_args, message):
    (tmp_path / "afile").write_text("x")
    cfg = write_config(tmp_path / "c.yaml")
    r = train_run("--config", cfg, *make_args(tmp_path))
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr


def test_missing_data_and_batch_larger_than_dataset(train_run, tmp_path):
    cfg = write_config(tmp_path / "c.yaml", sources=[{"type": "synfundus", "path": str(tmp_path / "absent")}])
    r = train_run("--config", cfg, "--out", tmp_path / "run")
    assert r.returncode == 2 and "no labels.csv" in r.stderr
    csv_path = _csv_dataset(tmp_path, 3)
    cfg = write_config(tmp_path / "c2.yaml", sources=[{"type": "csv", "path": str(csv_path)}], batch_size=8)
    r = train_run("--config", cfg, "--out", tmp_path / "run2")
    assert r.returncode == 2 and "larger than the dataset" in r.stderr


def test_csv_source_skips_and_counts_corrupt_images(tmp_path):
    from engine.preprocess import FundusTransform
    from engine.train.data import make_loader

    csv_path = _csv_dataset(tmp_path, 6, corrupt=2)
    cfg = config_from_dict({**TINY, "sources": [{"type": "csv", "path": str(csv_path)}], "batch_size": 6, "steps": 3})
    loader, _ = make_loader(cfg, FundusTransform(64), 0, 0, 1)
    batches = list(loader)
    skipped = sum(b["skipped"] for b in batches)
    assert skipped > 0 and all(b["images"].shape[0] == 6 - b["skipped"] for b in batches)


def test_augmentation_is_seeded_and_hue_jitter_shifts_colour():
    from PIL import Image

    from engine.preprocess import FundusTransform
    from engine.synth import render_fundus
    from engine.train.data import TrainTransform

    image = Image.fromarray(render_fundus(4, size=96).image)
    base = FundusTransform(64)
    plain = TrainTransform(base, True, colour_jitter=0.2, hue_jitter=0.0)
    hued = TrainTransform(base, True, colour_jitter=0.2, hue_jitter=0.2)
    assert torch.equal(plain(image, 7), plain(image, 7)) and torch.equal(hued(image, 7), hued(image, 7))
    assert not torch.equal(plain(image, 7), plain(image, 8))
    # same seed, same geometry and enhancement draws: only the hue differs, so the red/green balance moves
    a, b = plain(image, 7), hued(image, 7)
    assert not torch.allclose(a, b, atol=1e-3)
    assert TrainTransform(base, False)(image, 7).shape == (3, 64, 64)


def test_synfundus_layout_source(tmp_path):
    from engine.synth import generate_dataset
    from engine.train.data import SynFundusFolder

    generate_dataset(tmp_path / "syn", n=3, seed=5, size=64, workers=1, progress=False)
    src = SynFundusFolder(str(tmp_path / "syn"))
    img, caption, key = src.get(1, draw=10)
    assert img.size == (64, 64) and caption and key
    _, caption_again, _ = src.get(1, draw=10)
    assert caption_again == caption  # a draw is reproducible


def test_synfundus_source_missing_column_stops_training_in_one_line(train_run, tmp_path):
    from engine.synth.schema import SYNFUNDUS_COLUMNS

    root = tmp_path / "syn"
    (root / "images").mkdir(parents=True)
    make_fundus(size=(64, 64)).save(root / "images" / "0.png")
    header = [c for c in SYNFUNDUS_COLUMNS if c != "is_pm"]
    (root / "labels.csv").write_text(",".join(header) + "\n" + ",".join("0" for _ in header) + "\n")
    cfg = write_config(tmp_path / "c.yaml", sources=[{"type": "synfundus", "path": str(root), "eye_side_zero": "left"}])
    r = train_run("--config", cfg, "--out", tmp_path / "run")
    assert r.returncode == 2 and "lacks SynFundus-1M column(s) is_pm" in r.stderr and "Traceback" not in r.stderr
    assert "unknown keys" not in r.stderr  # eye_side_zero is a synfundus option


def test_webdataset_source(tmp_path):
    import io
    import tarfile

    from engine.train.data import WebDatasetSource

    shard = tmp_path / "shard-000.tar"
    with tarfile.open(shard, "w") as tar:
        for i in range(3):
            for suffix, data in (("png", _png(i)), ("txt", f"caption {i}".encode())):
                info = tarfile.TarInfo(f"{i:04d}.{suffix}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    src = WebDatasetSource(str(shard))
    assert src.get(0)[1] == "caption 0" and src.get(2)[1] == "caption 2"
    assert src.get(1)[1] == "caption 1"  # going back restarts the shard
    assert src.get(4)[1] == "caption 1"  # wraps around once the size is known


def _png(seed):
    import io

    buf = io.BytesIO()
    make_fundus(size=(64, 64), seed=seed).save(buf, "PNG")
    return buf.getvalue()


# --- losses ------------------------------------------------------------------------------------
def test_soft_label_loss_equals_clip_loss_for_distinct_labels():
    from open_clip.loss import ClipLoss

    torch.manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(6, 8), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn(6, 8), dim=-1)
    scale = torch.tensor(10.0)
    distinct = SoftLabelClipLoss()(img, txt, scale, torch.arange(6))
    assert distinct == pytest.approx(float(ClipLoss()(img, txt, scale)), rel=1e-6)
    shared = SoftLabelClipLoss()(img, txt, scale, torch.tensor([0, 0, 0, 1, 1, 2]))
    assert float(shared) != pytest.approx(float(distinct), rel=1e-3)


# --- runs ------------------------------------------------------------------------------------
# A training run that SIGKILLs itself when step N ends (after its logging and checkpointing), through
# the trainer's on_step_end callback: what a power cut or the OOM killer does mid-run.
KILL_AT_STEP = """
import os, signal, sys
from engine.train.main import main

class KillAt:
    def __init__(self, step):
        self.step = step

    def on_step_end(self, trainer, step):
        if step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)

sys.exit(main(sys.argv[2:], callbacks=[KillAt(int(sys.argv[1]))]))
"""


def train_killed_at(step: int, *args, timeout=300):
    return subprocess.run([sys.executable, "-c", KILL_AT_STEP, str(step), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout)


def straight_and_resumed(cfg: Path, tmp_path: Path) -> tuple[dict, dict]:
    """Final weights of an uninterrupted run and of one killed (SIGKILL) after step 3 and resumed."""
    r = train_cli("--config", cfg, "--out", tmp_path / "straight")
    assert r.returncode == 0, r.stderr
    r = train_killed_at(3, "--config", cfg, "--out", tmp_path / "killed")
    assert r.returncode == -9, r.stderr  # SIGKILL after step 3; the last checkpoint is step 2
    r = train_cli("--config", cfg, "--out", tmp_path / "killed", "--resume")
    assert r.returncode == 0, r.stderr
    return load_file(tmp_path / "straight" / "model.safetensors"), load_file(tmp_path / "killed" / "model.safetensors")


@pytest.mark.slow
def test_resume_after_sigkill_ends_where_uninterrupted_run_ends(tmp_path):
    a, b = straight_and_resumed(write_config(tmp_path / "c.yaml", steps=5), tmp_path)
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-3) for k in a)
    loss_a = [m["loss"] for m in metrics(tmp_path / "straight")]
    loss_b = {m["step"]: m["loss"] for m in metrics(tmp_path / "killed")}
    assert [loss_b[s] for s in range(1, 6)] == pytest.approx(loss_a, rel=1e-4)
    # keep_last=2: older checkpoints pruned; the final model loads as a trained model
    assert len(list((tmp_path / "killed" / "checkpoints").glob("step_*.state.safetensors"))) == 2
    model = VisionCLIP.load(tmp_path / "killed" / "model.safetensors")
    assert model.is_trained and model.metadata["training_data"]["real_patient_images"] == 0


@pytest.mark.slow
def test_weight_average_resumes_exactly_after_sigkill(tmp_path):
    """The EMA is restored on resume (else the final weights differ), and is what ships."""
    a, b = straight_and_resumed(write_config(tmp_path / "c.yaml", steps=5, ema_decay=0.9), tmp_path)
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-3) for k in a)
    raw = load_file(tmp_path / "straight" / "checkpoints" / "step_0000005.safetensors")  # the live weights
    head = "visual.head.proj.weight"
    assert not torch.allclose(a[head].float(), raw[head].float(), atol=1e-4)  # the average shipped, not the last step


@pytest.mark.slow
def test_resume_with_ema_added_to_a_run_without_one_is_a_one_line_error(tmp_path):
    assert train_cli("--config", write_config(tmp_path / "a.yaml", steps=2), "--out", tmp_path / "run").returncode == 0
    r = train_cli("--config", write_config(tmp_path / "b.yaml", steps=4, ema_decay=0.9), "--out", tmp_path / "run", "--resume")
    assert r.returncode == 2 and "holds no weight average" in r.stderr and "Traceback" not in r.stderr


def test_local_contrast_setting_is_saved_with_the_model(train_run, tmp_path):
    """One training step end to end (in process in the fast tier): the loop, saving, the model file."""
    cfg = write_config(tmp_path / "c.yaml", steps=1, local_contrast=True)
    r = train_run("--config", cfg, "--out", tmp_path / "run")
    assert r.returncode == 0, r.stderr
    model = VisionCLIP.load(tmp_path / "run" / "model.safetensors")
    assert model.transform.local_contrast  # inference preprocesses as training did
    assert not VisionCLIP.from_config("visionclip-effl0-minilm").transform.local_contrast


@pytest.mark.slow
def test_colour_normalise_measures_the_training_colour_and_saves_it_with_the_model(tmp_path):
    from engine.preprocess import FundusTransform
    from engine.train.data import mean_fundus_colour

    cfg = write_config(tmp_path / "c.yaml", steps=1, colour_normalise="inference")
    r = train_cli("--config", cfg, "--out", tmp_path / "run")
    assert r.returncode == 0, r.stderr
    model = VisionCLIP.load(tmp_path / "run" / "model.safetensors")
    target = model.transform.colour_target  # inference normalises as training did
    expected = mean_fundus_colour(load_config(cfg), FundusTransform(TINY["image_size"]))
    assert target == pytest.approx(expected, abs=1e-4)
    assert target[0] > target[1] > target[2] > 0  # a fundus is red-orange
    assert VisionCLIP.from_config("visionclip-effl0-minilm").transform.colour_target is None


@pytest.mark.slow
def test_colour_target_added_to_a_trained_model_keeps_its_weights(tmp_path):
    from engine.preprocess import FundusTransform
    from engine.train.data import mean_fundus_colour
    from engine.train.train import set_colour_target

    cfg = write_config(tmp_path / "c.yaml", steps=1)
    assert train_cli("--config", cfg, "--out", tmp_path / "run").returncode == 0
    old = VisionCLIP.load(tmp_path / "run" / "model.safetensors")
    new_id = set_colour_target(tmp_path / "run" / "model.safetensors", cfg, tmp_path / "recoloured.safetensors")
    new = VisionCLIP.load(tmp_path / "recoloured.safetensors")
    assert new.model_id == new_id != old.model_id
    assert new.transform.colour_target == pytest.approx(mean_fundus_colour(load_config(cfg), FundusTransform(TINY["image_size"])))
    assert all(torch.equal(a, b) for a, b in zip(old.network.state_dict().values(), new.network.state_dict().values()))
    assert new.metadata["colour_target_from"]["weights_of"] == old.model_id


def test_colour_normalise_modes_decide_whether_training_images_are_normalised():
    from engine.train.data import training_preprocess

    pre = {"image_size": 64, "colour_target": [0.5, 0.3, 0.2]}
    assert training_preprocess(config_from_dict({"colour_normalise": "inference"}), pre)["colour_target"] is None
    assert training_preprocess(config_from_dict({"colour_normalise": "both"}), pre)["colour_target"] == [0.5, 0.3, 0.2]


@pytest.mark.slow
def test_nan_loss_stops_with_message_and_usable_checkpoint(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", lr=1.0e30, warmup_steps=0, grad_clip=0.0, save_every=1, steps=6)
    r = train_cli("--config", cfg, "--out", tmp_path / "run")
    assert r.returncode == 2 and "loss became nan" in r.stderr.lower()
    assert "last good checkpoint" in r.stderr


@pytest.mark.slow
def test_two_process_gloo_follows_single_process(tmp_path):
    """Same global batch and seed: 2 ranks x 4 samples track 1 rank x 8 within 0.1% (float reduction order)."""
    single = write_config(tmp_path / "single.yaml", steps=3, batch_size=8, augment=False)
    double = write_config(tmp_path / "double.yaml", steps=3, batch_size=4, augment=False)
    r = train_cli("--config", single, "--out", tmp_path / "one")
    assert r.returncode == 0, r.stderr
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           "-m", "engine.train.main", "--config", str(double), "--out", str(tmp_path / "two")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    one = [m["loss"] for m in metrics(tmp_path / "one")]
    two = [m["loss"] for m in metrics(tmp_path / "two")]
    assert len(one) == len(two) == 3
    assert two == pytest.approx(one, rel=1e-3)



@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to find the worker processes")
@pytest.mark.slow
def test_render_workers_end_when_the_trainer_is_killed(tmp_path):
    """Forkserver render workers do not see their trainer die on their own (their parent is the fork
    server); a killed run must not leave them rendering."""
    cfg = write_config(tmp_path / "c.yaml", steps=40, workers=1, save_every=100)
    before = forkserver_processes()
    r = train_killed_at(2, "--config", cfg, "--out", tmp_path / "run")
    assert r.returncode == -9, r.stderr
    deadline = time.monotonic() + 20
    while (left := forkserver_processes() - before) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, f"processes left running after the trainer was killed: {sorted(left)}"
