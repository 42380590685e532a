"""engine.quality.assess_quality: good fundus-like images pass, clear degradations are flagged."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from engine.quality import assess_quality


def fake_fundus(size=512, seed=0) -> Image.Image:
    """A crude fundus: dark frame, orange disc with texture, a bright optic disc and dark vessels."""
    rng = np.random.default_rng(seed)
    im = Image.new("RGB", (size, size), (0, 0, 0))
    d = ImageDraw.Draw(im)
    m = size // 16
    d.ellipse([m, m, size - m, size - m], fill=(190, 90, 40))
    d.ellipse([int(size * .62), int(size * .42), int(size * .75), int(size * .55)], fill=(250, 210, 150))
    for _ in range(14):
        x0, y0 = int(size * .68), int(size * .48)
        pts = [(x0, y0)]
        ang = rng.uniform(0, 2 * np.pi)
        for _ in range(8):
            ang += rng.normal(0, .3)
            x0 += int(np.cos(ang) * size / 20)
            y0 += int(np.sin(ang) * size / 20)
            pts.append((x0, y0))
        d.line(pts, fill=(110, 30, 20), width=max(2, size // 120))
    arr = np.asarray(im).astype(np.float32)
    inside = arr.sum(axis=2) > 0
    arr[inside] += rng.normal(0, 6, size=(int(inside.sum()), 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def test_good_image_is_gradable():
    q = assess_quality(fake_fundus())
    assert q["gradable"], q
    assert q["reasons"] == []
    assert set(q["scores"]) == {"fov_fraction", "mean_brightness", "clipped_fraction", "sharpness", "contrast"}
    assert 0.5 < q["scores"]["fov_fraction"] < 0.9


def test_large_image_and_other_modes():
    assert assess_quality(fake_fundus(1400))["gradable"]
    assert assess_quality(fake_fundus().convert("RGBA"))["gradable"]


@pytest.mark.parametrize("degrade, word", [
    (lambda im: im.filter(ImageFilter.GaussianBlur(12)), "Blurred"),
    (lambda im: Image.eval(im, lambda v: int(v * 0.15) + 1 if v else 0), "Under-exposed"),
    (lambda im: Image.eval(im, lambda v: min(255, v * 4)), "Over-exposed"),
    (lambda im: Image.new("RGB", im.size, (0, 0, 0)), "dark"),
    (lambda im: im.resize((64, 64)).resize((512, 512)).crop((0, 0, 512, 512)).transform(
        (512, 512), Image.EXTENT, (0, 0, 2048, 2048)), "field of view"),
    (lambda im: Image.new("RGB", im.size, (128, 128, 128)), "contrast"),
])
def test_degraded_images_are_flagged(degrade, word):
    q = assess_quality(degrade(fake_fundus()))
    assert not q["gradable"]
    assert any(word.lower() in r.lower() for r in q["reasons"]), q


def test_reasons_are_one_line_each():
    q = assess_quality(fake_fundus().filter(ImageFilter.GaussianBlur(15)))
    assert all("\n" not in r and len(r) < 120 for r in q["reasons"])


def test_calibration_on_the_synthetic_generator():
    """Few false alarms on the engine's own good/usable renders; heavy blur of the same images is caught."""
    synth = pytest.importorskip("engine.synth")
    flagged, blurred_caught, n = 0, 0, 0
    for seed in range(2000, 2024):
        r = synth.render_fundus(seed, size=512)
        if r.labels.get("quality_grade") == "reject":
            continue
        n += 1
        im = Image.fromarray(r.image)
        flagged += not assess_quality(im)["gradable"]
        blurred_caught += not assess_quality(im.filter(ImageFilter.GaussianBlur(8)))["gradable"]
    assert n >= 15
    assert flagged <= max(1, n // 10), (flagged, n)
    assert blurred_caught >= 0.8 * n, (blurred_caught, n)


@pytest.mark.parametrize("gain", [0.3, 0.15])
def test_a_dark_but_complete_photograph_is_under_exposed_with_its_field_of_view_intact(gain):
    from engine.preprocess import fundus_mask
    from engine.resources import asset_dir

    rgb = np.asarray(Image.open(asset_dir("examples") / "synthetic_normal_11.png").convert("RGB"), dtype=np.float32)
    noise = np.random.default_rng(0).normal(0, 1, rgb.shape)
    dark = np.clip(rgb * gain + noise, 0, 255).astype(np.uint8)
    reference = fundus_mask(rgb.astype(np.uint8))
    assert (fundus_mask(dark) & reference).sum() / reference.sum() > 0.97
    q = assess_quality(Image.fromarray(dark))
    assert any(r.startswith("Under-exposed") for r in q["reasons"])
    assert not any("field of view" in r for r in q["reasons"]), q["reasons"]
