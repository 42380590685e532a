"""The default map (multi-scale CAM): layers, smoothness, field of view, lesions on renders, randomisation."""
from __future__ import annotations

import argparse
import warnings

import cv2
import numpy as np
import pytest

from engine import VisionCLIP, load_prompt_set
from engine.preprocess import fundus_mask
from engine.saliency import DEFAULT_METHOD, MULTISCALE, explain
from engine.saliency import metrics as M
from engine.saliency.layers import resolve_target_layers
from engine.synth import render_fundus


@pytest.fixture(scope="module")
def effnet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return VisionCLIP.load()


@pytest.fixture(scope="module")
def screening():
    return load_prompt_set("screening")


@pytest.fixture(scope="module")
def glaucoma_renders():
    return [render_fundus(seed, size=320, conditions=["glaucoma"]) for seed in (1, 2, 3)]


def test_default_is_multiscale_on_the_stride_4_and_last_stages(effnet):
    assert DEFAULT_METHOD == "multiscale"
    visual = effnet.network.visual
    layers, _ = resolve_target_layers(visual, MULTISCALE)
    assert layers == [visual.trunk.blocks[1], visual.trunk.bn2]  # fine first, coarse last
    vit = VisionCLIP.from_config("ViT-B-16", pretrained_towers=False).network.visual
    assert len(resolve_target_layers(vit, MULTISCALE)[0]) == 1  # one token grid: one scale
    from engine.saliency.cli import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert parser.parse_args(["eye.png", "--class", "glaucoma"]).method == DEFAULT_METHOD


def test_old_maps_stay_available_by_name(effnet, screening, glaucoma_renders):
    image = glaucoma_renders[0].image
    default = explain(effnet, image, screening, "glaucoma")
    old = explain(effnet, image, screening, "glaucoma", method="gradcam")
    fused = explain(effnet, image, screening, "glaucoma", method="fused")  # an alias
    assert default.method == fused.method == "multiscale" and old.method == "gradcam"
    assert np.allclose(default.map, fused.map)
    assert not np.allclose(default.map, old.map, atol=1e-2)


def test_default_map_is_smooth_without_blocks(effnet, screening, glaucoma_renders):
    """Inside the field (its rim is a hard edge by design) no step between neighbouring pixels is larger than a
    Gaussian of a few pixels makes; the stride-4 grid upsampled without interpolation has steps twice as large."""
    def largest_step(m, where):
        inner = where[1:, :] & where[:-1, :], where[:, 1:] & where[:, :-1]
        return float(max(np.abs(np.diff(m, axis=0))[inner[0]].max(), np.abs(np.diff(m, axis=1))[inner[1]].max()))

    for render in glaucoma_renders[:2]:
        res = explain(effnet, render.image, screening, "glaucoma")
        side = res.input_map.shape[0]
        interior = cv2.erode(effnet.transform.prepare(render.image).fov.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
        blocky = cv2.resize(cv2.resize(res.input_map, (side // 4, side // 4), interpolation=cv2.INTER_AREA),
                            (side, side), interpolation=cv2.INTER_NEAREST)
        assert largest_step(blocky / blocky.max(), interior) > 0.15
        assert largest_step(res.input_map, interior) < 0.12
        fov = cv2.erode(fundus_mask(render.image).astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
        assert largest_step(res.map, fov) < 0.12  # on the photograph too (upsampled bilinearly)


def test_default_map_is_zero_outside_the_field_on_a_dark_photograph(effnet, screening, glaucoma_renders):
    from engine.saliency.explain import field_of_view

    render = glaucoma_renders[1]
    dark = (render.image.astype(np.float32) * 0.3).astype(np.uint8)
    true_fov = render.image.max(axis=2) > 0

    def iou(m):
        return (m & true_fov).sum() / (m | true_fov).sum()

    fov = field_of_view(dark)
    assert iou(fov) > 0.93 and iou(fov) >= iou(fundus_mask(dark)) - 0.01, "the vignetted rim stays in the field"
    res = explain(effnet, dark, screening, "glaucoma")
    assert res.map.max() == pytest.approx(1.0) and (res.map[~fov] == 0).all()
    assert (np.asarray(res.overlay)[~fov] == dark[~fov]).all()



def test_the_field_of_view_is_the_convex_hull_of_the_largest_lit_part():
    """The hull comes from the part's outer contour; it must equal the hull of all of its pixels."""
    import cv2

    from engine.saliency.explain import field_of_view

    rgb = np.zeros((300, 340, 3), np.uint8)
    cv2.circle(rgb, (170, 150), 120, (150, 80, 40), -1)
    cv2.rectangle(rgb, (160, 20), (180, 90), 0, -1)         # a notch from the rim: inside the hull
    cv2.circle(rgb, (140, 160), 15, 0, -1)                  # a black hole: filled
    cv2.circle(rgb, (320, 20), 8, (200, 200, 200), -1)      # a separate bright speck: not the field
    fov = field_of_view(rgb)
    _, labels, stats, _ = cv2.connectedComponentsWithStats((rgb.max(axis=2) > 0).astype(np.uint8), connectivity=8)
    lit = labels == 1 + np.argmax(stats[1:, cv2.CC_STAT_AREA])
    hull = np.zeros(lit.shape, np.uint8)
    cv2.fillConvexPoly(hull, cv2.convexHull(cv2.findNonZero(lit.astype(np.uint8))), 1)
    expected = cv2.erode(hull, np.ones((3, 3), np.uint8)).astype(bool) | lit
    assert np.array_equal(fov, expected)
    assert fov[50, 170] and fov[160, 140] and not fov[20, 320]

def test_default_map_points_at_the_cup_more_than_the_earlier_default(effnet, screening, glaucoma_renders):
    ratios = {"multiscale": [], "gradcam": []}
    for r in glaucoma_renders:
        fov = fundus_mask(r.image)
        for method in ratios:
            res = explain(effnet, r.image, screening, "glaucoma", method=method)
            ratios[method].append(M.energy_ratio(res.map, r.masks["enlarged_cup"], fov))
    assert np.mean(ratios["multiscale"]) > 2.0
    assert np.mean(ratios["multiscale"]) > 1.2 * np.mean(ratios["gradcam"]), ratios


def test_randomised_weights_destroy_the_default_map(effnet, screening, glaucoma_renders):
    image = glaucoma_renders[2].image
    random = M.randomize_image_tower(effnet, seed=0)
    trained = explain(effnet, image, screening, "glaucoma")
    randomised = explain(random, image, screening, "glaucoma")
    assert M.spearman(trained.input_map, randomised.input_map) < 0.6
    assert M.ssim(trained.input_map, randomised.input_map) < 0.5
    fov = fundus_mask(image)
    cup = glaucoma_renders[2].masks["enlarged_cup"]
    assert M.energy_ratio(randomised.map, cup, fov) < 0.5 * M.energy_ratio(trained.map, cup, fov)


def test_road_curve_deletes_the_most_relevant_pixels_first(effnet, screening):
    """Deletion follows the map: the 5 % it ranks highest are imputed (a spot and a corner give different scores)."""
    from engine.saliency import make_target

    image = np.zeros((64, 64, 3), np.uint8)
    image[8:56, 8:56] = (180, 90, 40)
    image[24:40, 24:40] = (250, 240, 150)
    tensor = effnet.transform(image)
    target, _ = make_target(effnet, screening, "diabetic retinopathy")
    side = tensor.shape[-1]
    on_spot = np.zeros((side, side), np.float32)
    on_spot[side * 3 // 8:side * 5 // 8, side * 3 // 8:side * 5 // 8] = 1.0
    curve = M.road_curve(effnet.network, tensor, on_spot, target, percentages=(5,))
    assert set(curve) == {"percentages", "deletion", "insertion"} and curve["percentages"] == [5]
    assert all(np.isfinite(curve["deletion"] + curve["insertion"]))
    corner = np.zeros_like(on_spot)
    corner[:side // 4, :side // 4] = 1.0
    off = M.road_curve(effnet.network, tensor, corner, target, percentages=(5,))
    assert curve["deletion"][0] != pytest.approx(off["deletion"][0], abs=1e-6)


def test_a_map_leaves_the_weights_trainable_and_without_gradients(effnet, screening, glaucoma_renders):
    """The map's backward pass skips weight gradients (twice as fast) and restores the weights' flags."""
    params = list(effnet.network.parameters())
    before = [p.requires_grad for p in params]
    params[0].requires_grad_(False)  # a frozen weight stays frozen
    try:
        explain(effnet, glaucoma_renders[0].image, screening, "glaucoma")
        assert [p.requires_grad for p in params] == [False, *before[1:]]
        assert all(p.grad is None for p in params)
    finally:
        params[0].requires_grad_(before[0])
