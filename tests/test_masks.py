"""Dense supervision from the generator's masks: data path, augmentation alignment, the head, the loss."""
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from engine import VisionCLIP, VisionCLIPError
from engine.preprocess import FundusTransform
from engine.train.data import SyntheticSource, TrainTransform, collate
from engine.train.distributed import DistEnv
from engine.train.masks import (MASK_CHANNELS, load_mask_head, mask_channels, mask_loss, predict_masks,
                                structure_scores)
from engine.train.params import config_from_dict
from engine.train.train import Trainer

from .conftest import make_fundus
from .test_train import TINY


def _pale(img_tensor: torch.Tensor, base: FundusTransform) -> np.ndarray:
    rgb = (img_tensor * base.std + base.mean).permute(1, 2, 0).numpy()
    return (rgb[..., 1] > 0.55) & (rgb[..., 0] > 0.75)  # the pale optic disc of make_fundus


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_masks_follow_the_augmented_image_exactly(seed):
    """Crop to the fundus, random crop, rotation and resize move a mask with its image."""
    img = make_fundus(size=(320, 240), seed=0)
    disc = np.asarray(img)[..., 1] > 180  # the disc is the only bright-green region
    base = FundusTransform(128)
    t = TrainTransform(base, augment=True, colour_jitter=0.0)
    image, masks = t(img, seed, np.stack([disc, np.zeros_like(disc), disc]))
    assert masks.shape == (3, 128, 128) and masks.dtype == torch.uint8 and not masks[1].any()
    assert torch.equal(image, t(img, seed))  # masks do not change the image or its random draws
    pale, moved = _pale(image, base), masks[0].numpy().astype(bool)
    iou = (pale & moved).sum() / (pale | moved).sum()
    unmoved = TrainTransform(base, augment=False)(img, seed, disc[None])[1][0].numpy().astype(bool)
    assert iou > 0.8, iou
    assert (pale & unmoved).sum() / (pale | unmoved).sum() < iou  # the augmentation did move the disc


def test_synthetic_masks_come_from_the_same_render_as_image_and_caption():
    src = SyntheticSource(seed=3, size=96)
    for i in range(3):
        img, caption, key, masks = src.get_with_masks(i)
        plain = src.get(i)
        assert np.array_equal(np.asarray(img), np.asarray(plain[0])) and (caption, key) == plain[1:]
        assert masks.shape == (len(MASK_CHANNELS), 96, 96)


def test_mask_channels_group_the_renderer_masks():
    m = lambda *px: np.isin(np.arange(16).reshape(4, 4), px)  # noqa: E731
    out = mask_channels({"microaneurysms": m(0), "enlarged_cup": m(5), "disc_pallor": m(6), "media_opacity": m(9)}, (4, 4))
    assert out[0].nonzero()[0].size == 1 and out[0].flat[0] == 1  # lesion
    assert out[1].flat[6] == 1 and out[2].flat[5] == 1  # disc finding, cup
    assert out.sum() == 3  # diffuse media opacity is not a target


def test_mask_loss_ignores_samples_without_masks():
    logits = torch.zeros(2, 3, 4, 4)
    masks = torch.zeros(2, 3, 16, 16, dtype=torch.uint8)
    masks[1] = 1
    both = mask_loss(logits, masks)
    first = mask_loss(logits, masks, torch.tensor([True, False]))
    assert float(first) == pytest.approx(float(torch.log(torch.tensor(2.0))))  # BCE of logit 0
    assert float(both) == pytest.approx(float(first))  # equal targets' BCE at logit 0; valid flags weight them
    b = collate([(torch.zeros(3, 4, 4), "a", "k", torch.ones(3, 4, 4, dtype=torch.uint8)), (torch.zeros(3, 4, 4), "b", "k")])
    assert b["mask_valid"].tolist() == [True, False] and b["masks"][1].sum() == 0


def test_mask_loss_needs_a_synthetic_source_and_a_real_layer(tmp_path):
    with pytest.raises(VisionCLIPError, match="needs a synthetic or synfundus source"):
        config_from_dict({**TINY, "mask_loss_weight": 1.0, "sources": [{"type": "csv", "path": "x"}]})
    cfg = config_from_dict({**TINY, "mask_loss_weight": 1.0, "mask_layer": "trunk.blockz.2"})
    with pytest.raises(VisionCLIPError, match="mask_layer 'trunk.blockz.2' is not a layer"):
        Trainer(cfg, tmp_path / "run", DistEnv())


def _run(tmp_path, name, **overrides) -> tuple[Trainer, list[dict]]:
    cfg = config_from_dict({**TINY, "steps": 6, "save_every": 6, **overrides})
    trainer = Trainer(cfg, tmp_path / name, DistEnv())
    trainer.run()
    rows = [json.loads(l) for l in (tmp_path / name / "metrics.jsonl").read_text().splitlines() if '"loss"' in l]
    return trainer, rows


def test_mask_head_learns_with_the_contrastive_loss_and_is_not_shipped(tmp_path):
    off, plain = _run(tmp_path, "off")
    on, dense = _run(tmp_path, "on", mask_loss_weight=1.0, lr=2e-3)
    assert off.mask_head is None and "mask_loss" not in plain[0]
    assert [r["mask_loss"] for r in dense][-1] < 0.7 * dense[0]["mask_loss"]  # the head learns
    assert dense[0]["loss"] == pytest.approx(dense[0]["contrastive_loss"] + dense[0]["mask_loss"], rel=1e-6)
    # off by default: the first step's contrastive loss is the same with and without the head
    assert dense[0]["contrastive_loss"] == plain[0]["loss"]
    shipped = load_file(tmp_path / "on" / "model.safetensors")
    assert not any("mask" in k for k in shipped)  # dropped at save
    state = load_file(tmp_path / "on" / "checkpoints" / "step_0000006.state.safetensors")
    assert any(k.startswith("mask_head/") for k in state)  # kept for an exact resume
    assert VisionCLIP.load(tmp_path / "on" / "model.safetensors").is_trained
    # the trained head reads back from the state file onto the step's model, and predicts as it did
    model = VisionCLIP.load(tmp_path / "on" / "checkpoints" / "step_0000006.safetensors")
    head = load_mask_head(model, tmp_path / "on")
    for k, v in on.mask_head.state_dict().items():
        assert torch.equal(head.state_dict()[k].cpu(), v.cpu()), k
    maps = predict_masks(model, head, [make_fundus(seed=s) for s in range(3)], batch_size=2)
    assert maps.shape[:2] == (3, len(MASK_CHANNELS)) and 0 <= maps.min() and maps.max() <= 1
    with pytest.raises(VisionCLIPError, match="holds no mask head"):
        load_mask_head(VisionCLIP.load(tmp_path / "off" / "model.safetensors"), tmp_path / "off")
    with pytest.raises(VisionCLIPError, match="no checkpoint at step 5 "):
        load_mask_head(model, tmp_path / "on", step=5)


def test_structure_scores_grade_the_cup_the_disc_and_lesions():
    maps = torch.zeros(2, len(MASK_CHANNELS), 20, 20)
    disc, cup, lesion = (MASK_CHANNELS.index(c) for c in ("disc", "cup", "lesion"))
    maps[:, disc, 8:12, 8:12] = 1.0  # the same disc, 16 cells
    maps[0, cup, 9:11, 9:11] = 0.5   # a small faint cup: soft area 2
    maps[1, cup, 9:12, 9:12] = 1.0   # a large cup: area 9
    maps[1, lesion, :2, :] = 1.0
    s = structure_scores(maps)
    assert s["cup_to_disc"].tolist() == pytest.approx([2 / 16, 9 / 16])
    assert s["disc_area"].tolist() == pytest.approx([16 / 400] * 2)
    assert s["lesion_area"].tolist() == pytest.approx([0, 40 / 400])


@pytest.mark.parametrize("pipeline", ["v1", "v2"])
def test_every_render_keeps_the_optic_disc_and_cup_as_structures(pipeline):
    """Whole disc and cup masks in healthy eyes too (dense targets for the cup-to-disc ratio), kept
    apart from the finding masks that the caption names."""
    from engine.synth.render import render_fundus

    cdr = {}
    for cond in ("normal", "glaucoma"):
        areas = []
        for seed in range(4):
            s = render_fundus(seed, 128, [cond], pipeline)
            disc, cup = s.structures["optic_disc"], s.structures["optic_cup"]
            assert disc.any() and cup.any() and not (cup & ~disc).any()  # the cup lies in the disc
            assert "optic_disc" not in s.masks and "optic_disc" not in {f["name"] for f in s.findings}
            areas.append(cup.sum() / disc.sum())
        cdr[cond] = np.mean(areas)
    assert cdr["glaucoma"] > 2 * cdr["normal"], cdr


def test_synthetic_source_masks_follow_its_pipeline():
    """get_with_masks renders with the source's pipeline (it once rendered v1 whatever was asked)."""
    src = SyntheticSource(seed=3, size=96, pipeline="v2")
    img, caption, _, masks = src.get_with_masks(1)
    assert np.array_equal(np.asarray(img), np.asarray(src.get(1)[0])) and caption == src.get(1)[1]
    assert masks[1].any() and masks[2].any()  # disc and cup channels from the structures


def test_synth_folder_masks_train_as_the_generator_gives_them(tmp_path):
    from engine.synth import generate_dataset
    from engine.synth.render import render_fundus
    from engine.synth.writer import load_structures
    from engine.train.data import MixtureDataset, SynFundusFolder

    folder = generate_dataset(tmp_path / "synth", 3, seed=5, size=64, progress=False, pipeline="v2")
    src = SynFundusFolder(folder, captions="labels")
    for i in range(3):
        img, caption, key, masks = src.get_with_masks(i, draw=i)
        assert (np.asarray(img), caption, key)[1:] == src.get(i, draw=i)[1:]
        s = render_fundus(5 + i, 64, None, "v2")
        assert np.array_equal(masks, mask_channels({**s.masks, **s.structures}, (64, 64)))
    assert set(load_structures(folder / "masks" / "0.npz")) == {"optic_disc", "optic_cup"}
    # a folder without masks (the real SynFundus-1M) trains, without the mask loss
    (folder / "masks" / "1.npz").unlink()
    (folder / "masks" / "2.npz").write_bytes(b"not a zip")
    assert src.get_with_masks(1)[3] is None and src.get_with_masks(2)[3] is None
    t = TrainTransform(FundusTransform(64), augment=False)
    ds = MixtureDataset([src], np.array([1.0]), t, seed=0, with_masks=True)
    items = [ds[g] for g in range(12)]
    assert {len(it) for it in items} == {3, 4}  # 4: image, caption, key, masks
    assert all(it[3].shape == (3, 64, 64) for it in items if len(it) == 4)


def test_a_mask_head_on_a_frozen_layer_is_refused(tmp_path):
    cfg = config_from_dict({**TINY, "mask_loss_weight": 1.0, "mask_layer": "trunk.blocks.0", "image_unlocked_groups": 1})
    with pytest.raises(VisionCLIPError, match="mask_layer 'trunk.blocks.0' is frozen"):
        Trainer(cfg, tmp_path / "run", DistEnv())
