"""Tests for the procedural synthetic fundus generator (engine/synth)."""
import argparse
import csv
import json
import os
import re

import numpy as np
import pytest

from engine.errors import VisionCLIPError
from engine.synth import (CONDITION_FLAGS, CONDITIONS, LABEL_COLUMNS, SyntheticFundusStream, build_caption,
                          generate_dataset, label_caption, labels_to_classes, normalise_labels, render_fundus)
from engine.synth.cli import add_arguments, run
from engine.synth.dataset import worker_start_method

HAEM = re.compile(r"ha?emorrhag", re.I)


def test_render_deterministic():
    a = render_fundus(3, 128)
    b = render_fundus(3, 128)
    assert a.image.shape == (128, 128, 3) and a.image.dtype == np.uint8
    assert np.array_equal(a.image, b.image)
    assert a.labels == b.labels and a.findings == b.findings
    assert set(a.masks) == set(b.masks) and all(np.array_equal(a.masks[k], b.masks[k]) for k in a.masks)
    c = render_fundus(4, 128)
    assert not np.array_equal(a.image, c.image)


@pytest.mark.parametrize("cond", [c for c in CONDITIONS] + [f"dr{g}" for g in range(5)])
def test_every_condition_renders(cond):
    for seed in (0, 1):
        s = render_fundus(seed, 128, [cond])
        assert s.image.shape == (128, 128, 3)
        classes = labels_to_classes(s.labels)
        if cond == "normal" or cond == "dr0":
            assert s.labels["dr_grade"] == 0
        if cond.startswith("dr") and len(cond) == 3:
            assert s.labels["dr_grade"] == int(cond[2])
        if cond == "dr":
            assert s.labels["dr_grade"] > 0
        if cond == "normal":
            assert classes == ["normal"] and not s.findings and not s.masks
        key = {"dme": "is_dme"}.get(cond, "is_" + cond)
        if key in CONDITION_FLAGS:
            assert s.labels[key] == 1
            assert CONDITION_FLAGS[key] in classes
            assert s.findings, f"{cond} rendered no findings"
        if cond == "dme":
            assert s.labels["dr_grade"] > 0


def test_masks_match_findings_and_lie_in_fov():
    for seed in range(12):
        s = render_fundus(seed, 160)
        names = {f["name"] for f in s.findings}
        assert names == set(s.masks)
        fov = s.image.max(axis=2) > 0
        fov_d = np.zeros_like(fov)
        # dilate fov by a pixel to forgive dark lesions at the rim
        import cv2
        fov_d = cv2.dilate(fov.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        for k, m in s.masks.items():
            assert m.dtype == bool and m.shape == (160, 160) and m.any()
            assert not (m & ~fov_d).any(), k
        for f in s.findings:
            assert set(f) == {"name", "location", "severity"}


def test_dr_grade_findings():
    s1 = render_fundus(5, 128, ["dr1"])
    assert {f["name"] for f in s1.findings} == {"microaneurysms"}
    s4 = render_fundus(5, 128, ["dr4"])
    assert {f["name"] for f in s4.findings} & {"neovascularisation_disc", "neovascularisation_elsewhere",
                                               "preretinal_haemorrhage", "vitreous_haemorrhage"}


def test_captions_agree_with_labels():
    rng = np.random.default_rng(0)
    for seed in range(40):
        s = render_fundus(seed, 96)
        for cap in (build_caption(s.labels, s.findings, rng), build_caption(s.labels, None, rng),
                    label_caption(s.labels, rng)):
            assert cap and cap[0].isupper()
            classes = labels_to_classes(s.labels)
            low = cap.lower()
            if classes == ["normal"]:
                assert "normal" in low
            has_haem = any("haemorrhage" in f["name"] for f in s.findings)
            for m in HAEM.finditer(cap):
                if not has_haem:
                    before = low[max(0, m.start() - 40):m.start()]
                    assert "no " in before, cap
            if "glaucoma" in low:
                assert s.labels["is_glaucoma"]
            if "cataract" in low:
                assert s.labels["is_cataract"]
            if "drusen" in low and not s.labels["is_amd"]:
                assert "no drusen" in low
        # every finding is described
        cap = build_caption(s.labels, s.findings, np.random.default_rng(seed))
        from engine.synth.captions import FINDING_WORDS
        for f in s.findings:
            assert any(w.lower() in cap.lower() for w in FINDING_WORDS[f["name"]]), (f, cap)


def test_schema_helpers():
    assert LABEL_COLUMNS[0] == "dr_grade" and LABEL_COLUMNS[-3:] == ["findings", "generator_version", "idx"]
    assert labels_to_classes({"dr_grade": 0}) == ["normal"]
    assert labels_to_classes({"dr_grade": "2", "is_glaucoma": "1"}) == ["diabetic retinopathy", "glaucoma"]
    r = normalise_labels({"IDX": "7", "DR_Grade": "3", "Eye_Side": "L", "is_cataract": "1.0"})
    assert r["dr_grade"] == 3 and r["eye_side"] == "left" and r["is_cataract"] == 1 and r["is_amd"] == 0
    with pytest.raises(VisionCLIPError, match="dr_grade"):
        normalise_labels({"dr_grade": "7"})
    with pytest.raises(VisionCLIPError, match="is_amd"):
        normalise_labels({"is_amd": "maybe"})


def _files(d):
    out = {}
    for root, _, fs in os.walk(d):
        for f in fs:
            p = os.path.join(root, f)
            out[os.path.relpath(p, d)] = open(p, "rb").read()
    return out


def test_generate_dataset_deterministic(tmp_path):
    from engine.synth.writer import load_masks

    a = generate_dataset(tmp_path / "a", 4, seed=1, size=96, progress=False)
    b = generate_dataset(tmp_path / "b", 4, seed=1, size=96, workers=2, progress=False)
    fa, fb = _files(a), _files(b)
    assert fa.keys() == fb.keys() and fa == fb
    assert len([k for k in fa if k.startswith("images")]) == 4
    with open(a / "labels.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0].keys()) == LABEL_COLUMNS and len(rows) == 4
    for r in rows:
        lab = normalise_labels(r)
        fnd = json.loads(r["findings"])
        assert set(load_masks(a / "masks" / f"{r['idx']}.npz")) == {f["name"] for f in fnd}
        assert lab["quality_grade"] in ("good", "usable", "reject")


@pytest.mark.parametrize("kwargs", [dict(n=0), dict(n=2, size=32), dict(n=2, conditions=["unicorn"]),
                                    dict(n=2, size=5000), dict(n=2, workers=0)])
def test_bad_arguments_write_nothing(tmp_path, kwargs):
    out = tmp_path / "out"
    with pytest.raises(VisionCLIPError):
        generate_dataset(out, progress=False, **{"size": 96, **kwargs})
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_unwritable_and_nonempty(tmp_path):
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("x")
    with pytest.raises(VisionCLIPError):
        generate_dataset(full, 1, size=96, progress=False)
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, 0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as root")
        with pytest.raises(VisionCLIPError):
            generate_dataset(ro / "out", 1, size=96, progress=False)
        assert list(ro.iterdir()) == []
    finally:
        os.chmod(ro, 0o700)


def test_cli(tmp_path, capsys):
    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(["--out", str(tmp_path / "o"), "--n", "2", "--size", "64", "--conditions", "glaucoma", "dr2"])
    assert run(args) == 0
    rows = list(csv.DictReader(open(tmp_path / "o" / "labels.csv")))
    assert all(r["is_gc"] == "1" and r["dr_grade"] == "2" and r["is_dm"] == "1" for r in rows)


def test_stream_workers_differ():
    import torch
    ds = SyntheticFundusStream(seed=0, size=64, length=4)
    dl = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2, multiprocessing_context=worker_start_method())
    caps = []
    imgs = []
    for item in dl:
        imgs.append(np.asarray(item["image"]).tobytes())
        caps.append(item["caption"])
        assert isinstance(item["labels"], dict)
    assert len(imgs) == 4 and len(set(imgs)) == 4
    single = [np.asarray(x["image"]).tobytes() for x in SyntheticFundusStream(seed=0, size=64, length=4)]
    assert sorted(single) == sorted(imgs)


def test_benchmark_folder_reads_as_labelled_eval_set(tmp_path):
    from engine.evaluate import read_labels
    from engine.synth.benchmark import condition_class, write_benchmark

    out = write_benchmark(tmp_path / "b", 4, seed=7, size=64, conditions=["normal", "glaucoma"])
    rows = read_labels(out)
    assert [label for _, label in rows] == ["normal", "glaucoma", "normal", "glaucoma"]
    assert condition_class("dr") == "diabetic retinopathy"
    with pytest.raises(VisionCLIPError):
        write_benchmark(out, 4, size=64)  # not empty: refuse to overwrite


def test_glaucoma_cup_is_visible_and_not_saturated():
    """The cup must stand out from the rim around it without burning out to white, or the cup-to-disc
    ratio (the glaucoma sign) cannot be learned."""
    from scipy import ndimage

    checked = 0
    for seed in range(12):
        s = render_fundus(seed, 256, ["glaucoma"])
        if s.labels["quality_grade"] != "good":
            continue
        cup = s.masks["enlarged_cup"]
        ring = ndimage.binary_dilation(cup, iterations=4) & ~cup
        lum = s.image.astype(float).mean(axis=2)
        assert lum[cup].mean() > lum[ring].mean() + 3, f"seed {seed}: cup not brighter than its rim"
        assert (s.image[cup] >= 250).all(axis=1).mean() < 0.01, f"seed {seed}: cup saturated to white"
        checked += 1
    assert checked >= 3


def test_cataract_spans_mild_to_dense():
    severities = {f["severity"] for seed in range(30) for f in render_fundus(seed, 96, ["cataract"]).findings
                  if f["name"] == "media_opacity"}
    assert severities == {"mild", "moderate", "dense"}


def test_fast_channel_helpers_are_numpys_bit_for_bit():
    """The renderer's fast channel max / mean / 3-channel maps must give exactly numpy's values (pixels unchanged)."""
    from engine.synth.primitives import channel_max, channel_mean, rgb, tint

    rng = np.random.default_rng(7)
    img = (rng.standard_normal((64, 80, 3)) * rng.uniform(0.01, 100, (64, 80, 1))).astype(np.float32)
    for a in (img, img[5:40, 9:70]):  # whole image and a region of interest (a strided view)
        assert np.array_equal(channel_max(a), a.max(axis=2))
        mean = channel_mean(a)
        assert mean.dtype == np.float32 and np.array_equal(mean, a.mean(axis=2))
    m = img[..., 0]
    assert np.array_equal(rgb(m) * img, m[..., None] * img) and rgb(m.astype(np.float64)).dtype == np.float64
    colour = np.array([0.6, 0.45, 0.3], np.float32)
    assert np.array_equal(tint(m, colour), m[..., None] * colour)


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs /proc to find the worker processes")
@pytest.mark.slow
def test_render_workers_end_when_the_writer_is_killed(tmp_path):
    """A killed `visionclip synth` must not leave its forkserver pool rendering (pool workers see their
    task pipe close; render workers of a training run need ExitWithParent, tested in test_train)."""
    import signal
    import subprocess
    import sys
    import time

    from .conftest import forkserver_processes

    before = forkserver_processes()
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "synth", "--out", str(tmp_path / "out"), "--n", "5000",
                             "--size", "96", "--workers", "2"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob(".out.tmp-*/images/*.png")) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert forkserver_processes() - before, "the pool never started"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 20
    while (left := forkserver_processes() - before) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, f"processes left running after the writer was killed: {sorted(left)}"
