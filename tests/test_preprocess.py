import io

import numpy as np
import pytest
from PIL import Image

from engine import FundusTransform, VisionCLIPError, load_image
from engine.preprocess import colour_gain, fundus_box, fundus_mask, fundus_mean

from .conftest import make_fundus


def _bytes(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16", "1"])
def test_any_mode_becomes_rgb(mode):
    base = make_fundus()
    img = base.convert(mode) if mode != "I;16" else Image.fromarray((np.asarray(base.convert("L"), dtype=np.uint16) * 256))
    fmt = "TIFF" if mode in ("CMYK", "I;16") else "PNG"
    out = load_image(_bytes(img, fmt))
    assert out.mode == "RGB" and out.size == base.size
    assert np.asarray(out).max() > 100  # content survived the conversion


def test_exif_orientation_is_applied():
    img = make_fundus(size=(320, 240))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    out = load_image(_bytes(img, "JPEG", exif=exif))
    assert out.size == (240, 320)


def test_crop_to_fundus_disc_and_square():
    img = Image.new("RGB", (600, 300))
    img.paste(make_fundus(size=(260, 260)), (170, 20))
    l, t, r, b = fundus_box(np.asarray(img))
    assert 170 <= l <= 180 and 20 <= t <= 30 and 420 <= r <= 430 and 270 <= b <= 280
    prepared = FundusTransform(224).prepare(img)
    assert prepared.tensor.shape == (3, 224, 224)
    back = prepared.to_original(np.ones((224, 224), dtype=np.float32))
    assert back.shape == (300, 600)
    assert back[:, :150].max() == 0 and back[150, 300] == pytest.approx(1.0)
    # to_input is its inverse: a mask on the photograph lands where the model sees it
    mask = np.zeros((300, 600), np.float32)
    mask[100:200, 250:350] = 1.0
    on_input = prepared.to_input(mask)
    assert on_input.shape == (224, 224)
    assert np.abs(prepared.to_original(on_input) - mask)[20:280, 170:430].mean() < 0.02


@pytest.mark.parametrize("size", [(50, 1000), (4000, 300), (64, 64)])
def test_any_aspect_ratio(size):
    img = Image.fromarray(np.full((size[1], size[0], 3), 120, np.uint8))
    assert FundusTransform(96)(img).shape == (3, 96, 96)


def test_non_image_file(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("hello")
    with pytest.raises(VisionCLIPError, match="not a readable image"):
        load_image(p)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_image(tmp_path, fmt):
    data = _bytes(make_fundus(size=(400, 400)), fmt)
    p = tmp_path / f"cut.{fmt.lower()}"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(VisionCLIPError):
        load_image(p)


def test_zero_byte_file(tmp_path):
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    with pytest.raises(VisionCLIPError, match="empty"):
        load_image(p)
    with pytest.raises(VisionCLIPError, match="empty"):
        load_image(b"")


def test_huge_image_refused_before_decoding(tmp_path):
    big = Image.new("1", (12000, 12000))  # 144 Mpx, a few KB as PNG
    p = tmp_path / "huge.png"
    big.save(p)
    with pytest.raises(VisionCLIPError, match="too large"):
        load_image(p)
    with pytest.raises(VisionCLIPError, match="too large"):
        load_image(make_fundus(), max_pixels=1000)


def test_missing_file():
    with pytest.raises(VisionCLIPError, match="no such image"):
        load_image("/nonexistent/eye.jpg")


def test_local_contrast_removes_illumination_and_colour_cast_but_keeps_vessels():
    from engine.preprocess import fundus_mask, local_contrast

    rgb = np.asarray(make_fundus(size=(256, 256)), dtype=np.float32)
    fov = fundus_mask(rgb.astype(np.uint8))
    # the same eye under a left-to-right illumination falloff and a greener camera
    falloff = np.linspace(1.0, 0.6, 256, dtype=np.float32)[None, :, None]
    cast = np.array([0.8, 1.15, 1.0], dtype=np.float32)
    other = np.clip(rgb * falloff * cast, 0, 255).astype(np.uint8)
    a, b = local_contrast(rgb.astype(np.uint8)), local_contrast(other)
    inner = fov & fundus_mask(other)
    raw_gap = np.abs(rgb / 255.0 - other / 255.0)[inner].mean()
    lc_gap = np.abs(a - b)[inner].mean()
    assert raw_gap > 0.08 and lc_gap < raw_gap / 4
    assert a[~fov].max() == 0.0  # the surround stays black, so the field of view is still found
    # a vessel (drawn dark red) stays darker than the retina around it
    vessel = np.all(np.abs(rgb - [110, 20, 10]) < 2, axis=-1) & fov
    assert a[vessel].mean() < a[fov & ~vessel].mean() - 0.05


def test_transform_local_contrast_flag_changes_the_input_and_keeps_the_fov():
    img = make_fundus()
    plain, lc = FundusTransform(128).prepare(img), FundusTransform(128, local_contrast=True).prepare(img)
    assert plain.tensor.shape == lc.tensor.shape == (3, 128, 128)
    assert not np.allclose(plain.tensor.numpy(), lc.tensor.numpy(), atol=0.1)
    assert (plain.fov == lc.fov).all() and 0.4 < plain.fov.mean() < 0.9


def test_colour_gain_maps_exposure_and_white_balance_to_the_target():
    from engine.preprocess import colour_gain, fundus_mask

    rgb = np.asarray(make_fundus(size=(256, 256)), dtype=np.float32)
    fov = fundus_mask(rgb.astype(np.uint8))
    # the same eye, under-exposed through a greener camera
    other = np.clip(rgb * np.array([0.55, 0.8, 0.7], dtype=np.float32), 0, 255).astype(np.uint8)
    target = (0.58, 0.36, 0.22)
    a, b = colour_gain(rgb.astype(np.uint8), target), colour_gain(other, target)
    inner = fov & fundus_mask(other)
    assert np.allclose(b[inner].mean(axis=0), target, atol=0.02)
    raw_gap = np.abs(rgb / 255.0 - other / 255.0)[inner].mean()
    assert np.abs(a - b)[inner].mean() < raw_gap / 5  # the two exposures now look alike
    assert b[~fundus_mask(other)].max() == 0.0  # the surround stays black
    vessel = np.all(np.abs(rgb - [110, 20, 10]) < 2, axis=-1) & fov
    assert b[vessel, 0].mean() < b[fov & ~vessel, 0].mean() - 0.05  # spatial detail is kept


def test_colour_gain_is_capped_for_a_nearly_black_photograph():
    from engine.preprocess import colour_gain

    dark = (np.asarray(make_fundus(size=(128, 128)), dtype=np.float32) * 0.05).astype(np.uint8)
    out = colour_gain(dark, (0.58, 0.36, 0.22), fov=np.ones(dark.shape[:2], bool))
    assert out.max() <= 4.0 * dark.max() / 255.0 + 1e-6  # at most 4x: noise is not blown up


def test_transform_colour_target_changes_the_input_and_keeps_the_fov():
    img = make_fundus()
    plain, norm = FundusTransform(128).prepare(img), FundusTransform(128, colour_target=(0.5, 0.5, 0.5)).prepare(img)
    assert not np.allclose(plain.tensor.numpy(), norm.tensor.numpy(), atol=0.1)
    assert (plain.fov == norm.fov).all()


def _normalise_step_by_step(t: FundusTransform, rgb: np.ndarray) -> np.ndarray:
    """The normalisation written out step by step, as it was before the lookup tables."""
    if t.colour_target is not None:
        rgb = (colour_gain(rgb, t.colour_target, fundus_mask(rgb)) * 255.0 + 0.5).astype(np.uint8)
    return (rgb.astype(np.float32) / 255.0 - t._mean_hwc) / t._std_hwc


@pytest.mark.parametrize("colour_target", [None, (0.5673, 0.3503, 0.2108)])
def test_table_normalisation_is_bit_identical_to_the_step_by_step_form(colour_target):
    t = FundusTransform(image_size=96, colour_target=colour_target)
    dark = (np.asarray(make_fundus(seed=2, size=(120, 120))) * 0.05).astype(np.uint8)
    images = [np.asarray(make_fundus(seed=s, size=(120, 100)).resize((96, 96))) for s in range(4)]
    images += [dark[:96, :96].copy(), np.zeros((96, 96, 3), np.uint8), np.full((96, 96, 3), (200, 120, 60), np.uint8)]
    for rgb in images:
        fast = t.normalise(rgb).permute(1, 2, 0).numpy()
        assert np.array_equal(fast, _normalise_step_by_step(t, rgb))


def test_fundus_mean_is_the_mean_colour_of_the_masked_pixels():
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[:2] = (255, 51, 0)
    fov = np.zeros((4, 4), bool)
    fov[:2] = True
    assert fundus_mean(rgb, fov) == pytest.approx([1.0, 0.2, 0.0])


def test_fundus_mean_does_not_drift_with_the_number_of_pixels():
    # a float32 running sum over a large field drifted by up to 1e-3 of the mean, which moved the
    # colour gain's rounded levels and the probabilities by up to 0.07 on real photographs
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(1200, 1200, 3), dtype=np.uint8)
    fov = rng.random((1200, 1200)) < 0.7
    exact = rgb[fov].astype(np.float64).mean(axis=0) / 255.0
    assert np.abs(fundus_mean(rgb, fov) - exact).max() < 1e-6
