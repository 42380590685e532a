"""bench.saliency's per-finding references: the lesion-uniform map, the share of misses that land on another
finding, finding prompts and the flag. Small renders (128 px), no model except the one end-to-end run."""
import json
from collections import defaultdict

import cv2
import numpy as np
import pytest

from bench import saliency as B
from engine.preprocess import FundusTransform, fundus_mask
from engine.prompts import PromptSet
from engine.synth import render_fundus

SIZE = 128


def geometry(seed):
    """A healthy render's field of view and model-input geometry (128 px input: a 32 x 32 fine grid)."""
    r = render_fundus(seed, size=SIZE, conditions=["normal"])
    return r.image, fundus_mask(r.image), FundusTransform(image_size=SIZE).prepare(r.image)


def blobs(shape, centres, radius):
    m = np.zeros(shape, np.uint8)
    for y, x in centres:
        cv2.circle(m, (int(x), int(y)), int(radius), 1, -1)
    return m.astype(bool)


def with_union(masks, cls, tol):
    masks = dict(masks)
    masks[f"any ({cls})"] = np.logical_or.reduce(list(masks.values()))
    return {n: (m, B.grown(m, tol)) for n, m in masks.items()}


@pytest.mark.parametrize("seed", [1, 2])
def test_lesion_uniform_points_at_the_only_lesion_type(seed):
    _, fov, prepared = geometry(seed)
    rng = np.random.default_rng(seed)
    ys, xs = np.nonzero(fov & ~B.grown(~fov, 12))  # well inside the field
    pick = rng.choice(len(ys), 6, replace=False)
    ma = blobs(fov.shape, zip(ys[pick], xs[pick]), 1) & fov
    masks = with_union({"microaneurysms": ma}, "diabetic retinopathy", tol=4)
    m = B.lesion_uniform_map(masks["any (diabetic retinopathy)"][0], prepared, fov)
    assert m.shape == fov.shape and m.max() == pytest.approx(1.0)
    assert not m[~fov].any()
    assert 0 < (m > 0.5).sum() and (m > 0).sum() > 4 * ma.sum()  # blurred as the real maps are, not the mask itself
    scores = B.score(m, masks, fov)
    assert scores["microaneurysms"][0] is True and scores["any (diabetic retinopathy)"][0] is True
    assert scores["microaneurysms"][1] > 5
    assert B.peak_on_other(m, masks) == {}


def test_lesion_uniform_misses_a_sparse_type_beside_a_dense_one():
    """A perfect class-level map peaks where the class's lesions are densest: a dense cluster of one type
    takes the peak from scattered dots of another, which then count as a miss on another finding."""
    _, fov, prepared = geometry(1)
    cy, cx = np.argwhere(fov).mean(axis=0)
    cluster = blobs(fov.shape, [(cy - 25 + dy, cx + dx) for dy in (-4, 0, 4) for dx in (-4, 0, 4)], 2) & fov
    dots = blobs(fov.shape, [(cy + 25, cx - 25), (cy + 25, cx + 25)], 1) & fov
    masks = with_union({"dot_blot_haemorrhages": cluster, "microaneurysms": dots}, "diabetic retinopathy", tol=4)
    m = B.lesion_uniform_map(masks["any (diabetic retinopathy)"][0], prepared, fov)
    scores = B.score(m, masks, fov)
    assert scores["dot_blot_haemorrhages"][0] is True
    assert scores["microaneurysms"][0] is False
    assert B.peak_on_other(m, masks) == {"microaneurysms": True}


def test_peak_on_other_on_a_constructed_map():
    shape, tol = (100, 100), 3
    a = blobs(shape, [(20, 20)], 2)
    b = blobs(shape, [(20, 80)], 2)
    c = blobs(shape, [(80, 50)], 2)
    masks = with_union({"a": a, "b": b, "c": c}, "x", tol)
    m = np.zeros(shape, np.float32)
    m[20, 80] = 1.0  # peak on b
    assert B.peak_on_other(m, masks) == {"a": True, "c": True}
    m = np.zeros(shape, np.float32)
    m[50, 50] = 1.0  # on background: every finding missed, none on another finding
    assert B.peak_on_other(m, masks) == {"a": False, "b": False, "c": False}
    m = np.zeros(shape, np.float32)
    m[20, 20 + 2 + tol] = 1.0  # beside a, within the tolerance: a hit for a, and on a for b's and c's misses
    assert B.peak_on_other(m, masks) == {"b": True, "c": True}
    m[20, 20 + 2 + tol] = 0.0
    m[20, 20 + 2 + tol + 2] = 1.0  # just beyond the tolerance: background for all three
    assert B.peak_on_other(m, masks) == {"a": False, "b": False, "c": False}
    # overlapping findings: the peak on both a and d is a hit for each, so neither is a miss
    d = blobs(shape, [(20, 22)], 2)
    m = np.zeros(shape, np.float32)
    m[20, 21] = 1.0
    out = B.peak_on_other(m, with_union({"a": a, "d": d, "c": c}, "x", tol))
    assert out == {"c": True}


def test_table_reports_the_share_of_misses_on_other_findings(capsys):
    rows = defaultdict(lambda: defaultdict(list))
    for hit in (True, False, False, False, False):
        rows["microaneurysms"]["multiscale"].append((hit, 2.0))
        rows["microaneurysms"]["random"].append((False, 1.0))
        rows["microaneurysms"][B.REFERENCE].append((False, 5.0))
    rows["microaneurysms"][B.MISSES] += [True, True, True, False]
    rows["any (dr)"]["multiscale"].append((True, 2.0))
    table = B.print_findings(rows, ["multiscale"], finding_prompts=True)
    assert table["microaneurysms"]["misses"] == 4
    assert table["microaneurysms"]["misses_on_other_finding"] == pytest.approx(0.75)
    assert table["microaneurysms"]["multiscale"]["pointing"] == pytest.approx(0.2)
    assert table["microaneurysms"][B.REFERENCE]["energy"] == pytest.approx(5.0)
    assert np.isnan(table["microaneurysms"][B.FINDING_PROMPT]["pointing"])
    assert "misses_on_other_finding" not in table["any (dr)"]
    assert "0.75 (3/4)" in capsys.readouterr().out


def test_finding_prompts_flag_parses():
    assert B.build_parser().parse_args([]).finding_prompts is False
    assert B.build_parser().parse_args(["--finding-prompts", "--n", "2"]).finding_prompts is True


def test_finding_prompt_set_names_the_finding_in_place_of_the_class():
    ps = PromptSet({"normal": ["a normal fundus"], "diabetic retinopathy": ["diabetic retinopathy"],
                    "glaucoma": ["glaucoma"]})
    out = B.finding_prompt_set(ps, "diabetic retinopathy", "microaneurysms")
    assert out.classes == ps.classes
    assert "microaneurysms" in out["diabetic retinopathy"] and "diabetic retinopathy" not in out["diabetic retinopathy"]
    assert out["glaucoma"] == ["glaucoma"] and out["normal"] == ["a normal fundus"]
    assert B.finding_words("no_such_finding") == ["no such finding"]


def test_bench_end_to_end_writes_the_new_columns(tmp_path, default_model, monkeypatch):
    monkeypatch.setattr(B.VisionCLIP, "load", classmethod(lambda cls, *a, **k: default_model))
    out = tmp_path / "s.json"
    assert B.main(["--n", "2", "--size", str(SIZE), "--conditions", "dr", "--maps", "multiscale", "--road", "0",
                   "--sanity", "0", "--no-speed", "--finding-prompts", "--json", str(out)]) == 0
    findings = json.loads(out.read_text())["findings"]
    union = findings["any (diabetic retinopathy)"]
    assert union["n"] == 2 and union[B.REFERENCE]["pointing"] == 1.0
    singles = {n: v for n, v in findings.items() if not n.startswith("any")}
    assert singles
    for v in singles.values():
        assert 0 <= v[B.FINDING_PROMPT]["pointing"] <= 1 and np.isfinite(v[B.FINDING_PROMPT]["energy"])
        assert v["misses"] == round(v["n"] * (1 - v["multiscale"]["pointing"]))
    # the one-peak bound caps the findings' mean pointing game, weighted by their images
    bound = union["one_peak"]["bound"]
    assert 0 < bound <= 1 and union["one_peak"]["reach_per_image"] <= union["one_peak"]["findings_per_image"]
    hits = sum(v["n"] * v["multiscale"]["pointing"] for v in singles.values())
    assert hits / sum(v["n"] for v in singles.values()) <= bound + 1e-9


def test_one_peak_reach_counts_the_findings_one_point_can_hit():
    """Two findings within the tolerance of each other and a third far away: one peak hits two of three."""
    shape, tol = (100, 100), 3
    masks = with_union({"a": blobs(shape, [(20, 20)], 2), "b": blobs(shape, [(20, 26)], 2),
                        "c": blobs(shape, [(80, 80)], 2)}, "x", tol)
    assert B.one_peak_reach(masks) == (2, 3)
    far = with_union({"a": blobs(shape, [(20, 20)], 2), "c": blobs(shape, [(80, 80)], 2)}, "x", tol)
    assert B.one_peak_reach(far) == (1, 2)
    assert B.one_peak_bound([(2, 3), (1, 2)]) == pytest.approx(3 / 5)
    assert np.isnan(B.one_peak_bound([]))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_no_map_beats_the_one_peak_bound(seed):
    """Whatever the map, the hits it scores on an image's findings never exceed one_peak_reach."""
    shape, tol = (100, 100), 4
    rng = np.random.default_rng(seed)
    found = {f"f{i}": blobs(shape, rng.integers(10, 90, size=(3, 2)), 2) for i in range(4)}
    masks = with_union(found, "x", tol)
    reach, count = B.one_peak_reach(masks)
    assert count == 4 and 1 <= reach <= 4
    fov = np.ones(shape, bool)
    for _ in range(50):
        m = rng.random(shape).astype(np.float32)
        hits = sum(hit for name, (hit, _) in B.score(m, masks, fov).items() if not B.is_union(name))
        assert hits <= reach
    cover = sum(g.astype(int) for n, (_, g) in masks.items() if not B.is_union(n))
    best = np.zeros(shape, np.float32)
    best[np.unravel_index(int(cover.argmax()), shape)] = 1.0  # a map peaking where most findings meet reaches it
    assert sum(hit for name, (hit, _) in B.score(best, masks, fov).items() if not B.is_union(name)) == reach
