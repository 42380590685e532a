"""research/disc_view.py: disc crops of renders and photographs, and their trunk features."""
import numpy as np
from PIL import Image

from research import disc_view


def _fundus_with_bright_spot(size: int = 600, spot=(0.5, 0.72)) -> Image.Image:
    """A dark-red disc of a fundus on black, with one bright spot at (y, x) fractions of the side."""
    yy, xx = np.mgrid[:size, :size]
    rgb = np.zeros((size, size, 3), np.uint8)
    rgb[(yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (0.45 * size) ** 2] = (150, 60, 30)
    near = (yy - spot[0] * size) ** 2 + (xx - spot[1] * size) ** 2 < (0.05 * size) ** 2
    rgb[near] = (250, 220, 170)
    return Image.fromarray(rgb)


def test_disc_crop_is_centred_on_the_brightest_spot_at_the_model_input_size(default_model):
    crop = disc_view.disc_crop(default_model, _fundus_with_bright_spot())
    side = default_model.image_size
    assert crop.shape == (side, side, 3) and crop.dtype == np.uint8
    lum = crop.mean(axis=2)
    centre = lum[side // 2 - 5:side // 2 + 5, side // 2 - 5:side // 2 + 5].mean()
    assert centre > 200 and lum[:10].mean() < 120  # the spot fills the middle; the corners hold the fundus


def test_trunk_features_are_the_pooled_trunk_per_crop_in_batches(default_model):
    crops = [disc_view.disc_crop(default_model, _fundus_with_bright_spot(spot=(0.5, x))) for x in (0.3, 0.7, 0.72)]
    one_batch = disc_view.trunk_features(default_model, crops)
    in_twos = disc_view.trunk_features(default_model, crops, batch=2)
    width = default_model.image_network.visual.head.proj.in_features
    assert one_batch.shape == (3, width)
    np.testing.assert_allclose(one_batch, in_twos, rtol=1e-4, atol=1e-5)
    assert not np.allclose(one_batch[0], one_batch[2], atol=1e-3)  # different photographs, different features


def test_render_crops_are_glaucoma_then_healthy_renders(default_model):
    crops, target = disc_view.render_crops(default_model, "v1", 2, disc_view.SIDE)
    assert target.tolist() == [1, 1, 0, 0]
    assert len(crops) == 4 and all(c.shape == (default_model.image_size, default_model.image_size, 3) for c in crops)
    assert not np.array_equal(crops[0], crops[2])


def test_real_rows_keep_the_condition_and_healthy_eyes_only(tmp_path):
    (tmp_path / "labels.csv").write_text("path,label\na.png,normal\nb.png,glaucoma\nc.png,cataract\nd.png,normal\n")
    for name in "abcd":
        Image.new("RGB", (8, 8)).save(tmp_path / f"{name}.png")
    paths, target = disc_view.real_rows(tmp_path, "glaucoma")
    assert [p.name for p in paths] == ["a.png", "b.png", "d.png"]
    assert target.tolist() == [0, 1, 0]
