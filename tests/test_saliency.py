"""Grad-CAM saliency (engine.saliency): maps, overlays, towers, ViT reshape, metrics, sanity, errors."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from engine import PromptSet, VisionCLIP, VisionCLIPError
from engine.preprocess import fundus_mask
from engine.saliency import METHODS, SimilarityTarget, SoftmaxTarget, TokenReshape, explain, find_target_layer
from engine.saliency.explain import make_target
from engine.saliency import metrics as M

TWO = PromptSet({"normal": ["a normal fundus photograph"], "glaucoma": ["an enlarged optic cup"]})


def _fundus(h: int = 160, w: int = 200, seed: int = 0) -> np.ndarray:
    """A small fundus-like photograph: textured orange disc on a black surround, not square."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    r = min(h, w) * 0.45
    disc = (yy - h / 2) ** 2 + (xx - w / 2) ** 2 < r * r
    img = np.zeros((h, w, 3), np.uint8)
    base = np.array([190, 90, 40], np.float32) + rng.normal(0, 12, (h, w, 3))
    base[int(h * 0.3):int(h * 0.45), int(w * 0.55):int(w * 0.7)] = (250, 230, 120)  # a bright "lesion"
    img[disc] = np.clip(base[disc], 0, 255).astype(np.uint8)
    return img


@pytest.fixture(scope="module")
def effnet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return VisionCLIP.load()


def _check_map(res, image):
    h, w = image.shape[:2]
    assert res.map.shape == (h, w) and res.map.dtype == np.float32
    assert np.isfinite(res.map).all() and res.map.min() >= 0 and res.map.max() <= 1
    assert res.map.std() > 0, "map is constant"
    assert res.overlay.size == (w, h) and res.overlay.mode == "RGB"


# --- maps and overlays ----------------------------------------------------------------------------
def test_effnet_map_on_original_zero_outside_fundus(effnet):
    image = _fundus()
    res = explain(effnet, image, TWO, "Glaucoma")
    _check_map(res, image)
    fov = image.max(axis=2) > 0  # the drawn disc
    assert (res.map[~fov] == 0).all()
    assert (fundus_mask(image) <= fov).all()
    assert res.input_map.shape == (effnet.image_size, effnet.image_size)
    assert res.class_name == "glaucoma" and res.method == "multiscale" and res.target == "softmax"
    assert set(res.probabilities) == {"normal", "glaucoma"} and abs(sum(res.probabilities.values()) - 1) < 1e-5
    ov = np.asarray(res.overlay)
    assert (ov[~fov] == image[~fov]).all(), "overlay must keep the photograph outside the fundus"
    assert not (ov[fov] == image[fov]).all(), "overlay must blend the map inside the fundus"
    plain = np.asarray(explain(effnet, image, TWO, "glaucoma", opacity=0.0).overlay)
    assert (plain == image).all(), "opacity 0 gives the original photograph, not the normalised tensor"


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "layercam", "eigencam", "gradcam-elementwise", "hirescam"])
def test_other_methods(effnet, method):
    res = explain(effnet, _fundus(), TWO, "glaucoma", method=method)
    _check_map(res, _fundus())
    assert res.method == method


def test_named_and_multiple_target_layers(effnet):
    image = _fundus()
    default = explain(effnet, image, TWO, "glaucoma")
    earlier = explain(effnet, image, TWO, "glaucoma", layers="trunk.blocks.4")
    both = explain(effnet, image, TWO, "glaucoma", layers=["trunk.blocks.4", "trunk.bn2"])
    for res in (earlier, both):
        _check_map(res, image)
    # a 14x14 stage and the 7x7 head give different maps; the pair is neither of them alone
    assert not np.allclose(earlier.input_map, default.input_map, atol=1e-3)
    assert not np.allclose(both.input_map, earlier.input_map, atol=1e-3)


def test_detail_layer_is_the_stride_4_stage_and_sharper(effnet):
    from engine.saliency import DETAIL, detail_layer
    from engine.saliency.explain import cam_map, make_target

    assert detail_layer(effnet.network.visual) is effnet.network.visual.trunk.blocks[1]  # timm: reduction 4
    image = _fundus()
    res = explain(effnet, image, TWO, "glaucoma", method="elementwise", layers="Detail")
    _check_map(res, image)
    assert res.method == "gradcam-elementwise"
    # on the model input, the last stage's map is (nearly) what its 10x10 grid can draw; the detail map
    # holds structure finer than that grid
    prepared = effnet.transform.prepare(image)
    target, _ = make_target(effnet, TWO, "glaucoma")
    coarse, _ = cam_map(effnet.network, prepared.tensor, target, "gradcam-elementwise")
    fine, _ = cam_map(effnet.network, prepared.tensor, target, "gradcam-elementwise", layers=DETAIL)
    last_grid = (effnet.image_size // 32,) * 2

    def finer_than_last_grid(m):
        return float(np.abs(m - M.best_map_on_grid(m, last_grid)).mean() / max(m.mean(), 1e-6))

    assert finer_than_last_grid(fine) > 2 * finer_than_last_grid(coarse)



@pytest.mark.parametrize("method, layers", [("multiscale", None), ("gradcam", None), ("gradcam-elementwise", "detail")])
def test_the_backward_pass_stops_at_the_target_layers_and_the_map_is_unchanged(effnet, method, layers):
    """The graph starts at the first target layer: the stem gets no gradient, and the map equals the one
    back-propagated from an input that requires a gradient (pytorch-grad-cam's own way)."""
    from pytorch_grad_cam import GradCAM

    from engine.saliency.explain import ImageEmbedder, cam_map

    prepared = effnet.transform.prepare(_fundus())
    target, _ = make_target(effnet, TWO, "glaucoma")
    stem = effnet.network.visual.trunk.conv_stem
    reached = []
    hook = stem.register_full_backward_hook(lambda *a: reached.append(1))
    try:
        fast, _ = cam_map(effnet.network, prepared.tensor, target, method, layers=layers)
    finally:
        hook.remove()
    assert reached == []
    if method == "gradcam":  # the reference: the whole graph, from an input that requires a gradient
        x = prepared.tensor[None].clone().requires_grad_(True)
        with torch.enable_grad():
            cam = GradCAM(model=ImageEmbedder(effnet.network), target_layers=[effnet.network.visual.trunk.bn2])
            reference = cam(input_tensor=x, targets=[target])[0]
        cam.activations_and_grads.release()
        effnet.network.zero_grad(set_to_none=True)
        assert np.allclose(fast, np.clip(reference, 0, 1), atol=1e-5)
    assert fast.std() > 0

def test_detail_layers_of_other_towers():
    from engine.saliency import detail_layer

    rn = VisionCLIP.from_config("RN50", pretrained_towers=False)
    assert detail_layer(rn.network.visual) is rn.network.visual.layer1
    vit = VisionCLIP.from_config("ViT-B-16", pretrained_towers=False)
    with pytest.raises(VisionCLIPError, match="stride-4 stage.*VisionTransformer") as e:
        explain(vit, _fundus(), TWO, "glaucoma", layers="detail", target="similarity")
    assert "\n" not in str(e.value)


def test_unknown_target_layer_is_one_line_error(effnet):
    with pytest.raises(VisionCLIPError, match=r"unknown target layer 'trunk.nope'.*trunk\.") as e:
        explain(effnet, _fundus(), TWO, "glaucoma", layers="trunk.nope")
    assert "\n" not in str(e.value)
    with pytest.raises(VisionCLIPError, match="empty target layer"):
        explain(effnet, _fundus(), TWO, "glaucoma", layers="trunk.bn2,")


def test_default_target_is_softmax_for_several_classes_and_similarity_for_one(effnet, recwarn):
    one = PromptSet({"glaucoma": ["an enlarged optic cup"]})
    assert explain(effnet, _fundus(), one, "glaucoma").target == "similarity"
    assert not [w for w in recwarn if "meaningless" in str(w.message)]  # not asked for: no warning
    sim = explain(effnet, _fundus(), TWO, "glaucoma", target="similarity")
    soft = explain(effnet, _fundus(), TWO, "glaucoma")
    assert sim.target == "similarity" and soft.target == "softmax"
    assert not np.allclose(sim.input_map, soft.input_map, atol=1e-3)


def test_softmax_target(effnet):
    res = explain(effnet, _fundus(), TWO, "glaucoma", target="softmax")
    assert res.target == "softmax" and res.map.std() > 0


def test_rn50_random_tower():
    m = VisionCLIP.from_config("RN50", pretrained_towers=False)
    layer, reshape = find_target_layer(m.network.visual)
    assert layer is m.network.visual.layer4 and reshape is None
    # untrained towers: the similarity map; a random softmax margin can be negative everywhere (blank map)
    _check_map(explain(m, _fundus(), TWO, "glaucoma", target="similarity"), _fundus())


def test_vit_b16_random_tower():
    m = VisionCLIP.from_config("ViT-B-16", pretrained_towers=False)
    layer, reshape = find_target_layer(m.network.visual)
    assert layer is m.network.visual.transformer.resblocks[-1].ln_1 and isinstance(reshape, TokenReshape)
    # untrained towers: the similarity map; a random softmax margin can be negative everywhere (blank map)
    _check_map(explain(m, _fundus(), TWO, "glaucoma", target="similarity"), _fundus())


# --- ViT reshape from the token count --------------------------------------------------------------
@pytest.mark.parametrize("side,prefix", [(7, 1), (14, 1), (14, 0), (7, 5)])
def test_token_reshape_grid_from_count(side, prefix):
    n, d = 2, 3
    grid = torch.arange(side * side, dtype=torch.float32).view(1, side * side, 1).expand(n, -1, d)
    tokens = torch.cat([torch.full((n, prefix, d), -1.0), grid], dim=1)
    out = TokenReshape(batch_first=True)(tokens)
    assert out.shape == (n, d, side, side)
    assert out[0, 0, 1, 0] == side and out[1, 2, side - 1, side - 1] == side * side - 1  # row-major patches
    seq_first = TokenReshape(batch_first=False)(tokens.permute(1, 0, 2))
    assert torch.equal(seq_first, out)


def test_token_reshape_known_prefix_and_bad_rank():
    assert TokenReshape(num_prefix_tokens=1).grid_for(50) == (1, 7, 7)
    with pytest.raises(ValueError):
        TokenReshape()(torch.zeros(2, 3))


# --- targets ------------------------------------------------------------------------------------
def test_targets():
    emb = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    out = torch.randn(8)
    sim = SimilarityTarget(emb[1])(out)
    assert torch.allclose(sim, torch.nn.functional.normalize(out, dim=0) @ emb[1])
    probs = torch.stack([SoftmaxTarget(emb, i, 50.0)(out) for i in range(3)])
    assert torch.allclose(probs.sum(), torch.tensor(1.0))
    assert SoftmaxTarget(emb, 0, 50.0)(out[None].repeat(4, 1)).shape == (4,)


def test_softmax_target_of_a_class_with_subclasses_sums_them():
    emb = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    out = torch.randn(8)
    owner = torch.tensor([0, 1, 1, 2])
    single = [SoftmaxTarget(emb, i, 50.0)(out) for i in range(4)]
    assert torch.allclose(SoftmaxTarget(emb, 1, 50.0, owner=owner)(out), single[1] + single[2])
    assert "classes=3" in repr(SoftmaxTarget(emb, 2, 50.0, owner=owner))
    with pytest.raises(IndexError):
        SoftmaxTarget(emb, 3, 50.0, owner=owner)
    with pytest.raises(ValueError, match="owner"):
        SoftmaxTarget(emb, 0, 50.0, owner=owner[:3])


def test_map_of_a_grouped_class_explains_its_reported_probability(effnet):
    grouped = PromptSet({"normal": ["a normal fundus photograph"],
                         "retinal vascular disease": {"diabetic retinopathy": ["diabetic retinopathy"],
                                                      "hypertensive retinopathy": ["hypertensive retinopathy"]}})
    target, kind = make_target(effnet, grouped, "retinal vascular disease")
    emb = effnet.encode_images([_fundus()])[0]
    (probs,) = effnet.classify([_fundus()], grouped)
    assert kind == "softmax" and float(target(emb)) == pytest.approx(probs["retinal vascular disease"], abs=1e-5)
    res = explain(effnet, _fundus(), grouped, "retinal vascular disease")
    assert res.map.std() > 0 and res.probabilities == pytest.approx(probs, abs=1e-4)


# --- metrics on hand-made maps --------------------------------------------------------------------
def test_pointing_game_and_energy_known_values():
    fov = np.zeros((20, 20), bool)
    fov[2:18, 2:18] = True  # 256 px
    mask = np.zeros_like(fov)
    mask[2:10, 2:10] = True  # 64 px: a quarter of the field
    hit = np.zeros((20, 20), np.float32)
    hit[5, 5] = 1.0
    assert M.pointing_game(hit, mask)
    miss = np.zeros((20, 20), np.float32)
    miss[12, 12] = 1.0
    assert not M.pointing_game(miss, mask)
    assert not M.pointing_game(miss, mask, tolerance=4)  # (12,12) is 3*sqrt(2) = 4.24 px from the mask
    assert M.pointing_game(miss, mask, tolerance=5)
    uniform = fov.astype(np.float32)
    assert M.energy_ratio(uniform, mask, fov) == pytest.approx(1.0)
    assert M.energy_fraction(uniform, mask, fov) == pytest.approx(0.25)
    inside = mask.astype(np.float32)
    assert M.energy_ratio(inside, mask, fov) == pytest.approx(4.0)
    assert M.energy_ratio(miss, mask, fov) == pytest.approx(0.0)
    half = inside + (fov & ~mask) * (1 / 3)  # energy 64 in, 64 out
    assert M.energy_fraction(half, mask, fov) == pytest.approx(0.5)


def test_best_map_on_grid_is_the_energy_ceiling():
    fov = np.ones((64, 64), bool)
    dots = np.zeros((64, 64), bool)
    dots[8::16, 8::16] = True  # 16 one-pixel dots, one per 16x16 cell
    share = dots.mean()
    coarse = M.best_map_on_grid(dots, (4, 4))  # every cell holds a dot: the best coarse map is flat
    assert M.energy_ratio(coarse, dots, fov) == pytest.approx(1.0, abs=0.05)
    fine = M.best_map_on_grid(dots, (64, 64))  # one cell per pixel: the mask itself
    assert M.energy_ratio(fine, dots, fov) == pytest.approx(1 / share)
    middle = M.energy_ratio(M.best_map_on_grid(dots, (16, 16)), dots, fov)
    assert 1.0 < middle < 1 / share


def test_baselines_and_map_similarity():
    fov = np.zeros((40, 40), bool)
    fov[5:35, 5:35] = True
    centre = M.centre_bias_map((40, 40), fov)
    assert np.unravel_index(centre.argmax(), centre.shape) in [(19, 19), (19, 20), (20, 19), (20, 20)]
    assert (centre[~fov] == 0).all() and (M.uniform_random_map((40, 40), fov)[~fov] == 0).all()
    rnd = M.uniform_random_map((40, 40), fov, seed=1)
    assert M.energy_ratio(rnd, fov & (np.arange(40)[:, None] < 20), fov) == pytest.approx(1.0, abs=0.1)
    assert M.spearman(centre, centre) == pytest.approx(1.0)
    assert M.ssim(centre, centre) == pytest.approx(1.0)
    assert M.spearman(centre, np.zeros_like(centre)) == 0.0
    free = M.centre_bias_map((40, 40))
    assert M.spearman(free, 1.0 - free) == pytest.approx(-1.0, abs=1e-4)


def test_condition_mask():
    masks = {"drusen_soft": np.eye(4, dtype=bool), "enlarged_cup": np.zeros((4, 4), bool)}
    assert M.condition_mask(masks, "Age-related macular degeneration").sum() == 4
    assert M.condition_mask(masks, "glaucoma") is None


def test_library_metric_runs(effnet):
    from engine.saliency import make_target

    res = explain(effnet, _fundus(), TWO, "glaucoma")
    target, _ = make_target(effnet, TWO, "glaucoma")
    out = M.library_faithfulness(effnet.network, effnet.transform(_fundus()), res.input_map, target, percentiles=())
    assert np.isfinite(out["cam_mult_change"])


# --- Adebayo model-randomisation check ------------------------------------------------------------
def test_randomised_image_tower_changes_map(effnet):
    image = _fundus()
    random = M.randomize_image_tower(effnet, seed=0)
    assert random.network.text is effnet.network.text  # only the image tower is copied
    assert not torch.equal(random.network.visual.trunk.conv_stem.weight, effnet.network.visual.trunk.conv_stem.weight)
    a = explain(effnet, image, TWO, "glaucoma").input_map
    b = explain(random, image, TWO, "glaucoma").input_map
    assert M.spearman(a, b) < 0.8
    assert np.abs(a - b).mean() > 0.05
    check = M.sanity_check(effnet, image, TWO, "glaucoma", randomised=random)  # the bench's entry point
    assert check["spearman"] == pytest.approx(M.spearman(a, b), abs=1e-6)
    assert check["ssim"] == pytest.approx(M.ssim(a, b), abs=1e-6)


# --- bad inputs ---------------------------------------------------------------------------------
def test_unknown_class_lists_valid(effnet):
    with pytest.raises(VisionCLIPError, match="normal, glaucoma"):
        explain(effnet, _fundus(), TWO, "cataract")


def test_unknown_method_and_target(effnet):
    with pytest.raises(VisionCLIPError, match=", ".join(METHODS).replace("+", r"\+")):
        explain(effnet, _fundus(), TWO, "glaucoma", method="fullgrad")
    with pytest.raises(VisionCLIPError, match="softmax, similarity"):
        explain(effnet, _fundus(), TWO, "glaucoma", target="logit")
    with pytest.raises(VisionCLIPError, match="opacity"):
        explain(effnet, _fundus(), TWO, "glaucoma", opacity=2)


def test_one_class_softmax_warns_and_falls_back(effnet):
    one = PromptSet({"glaucoma": ["an enlarged optic cup"]})
    with pytest.warns(UserWarning, match="softmax target is meaningless for one class; using similarity"):
        res = explain(effnet, _fundus(), one, "glaucoma", target="softmax")
    assert res.target == "similarity" and res.map.std() > 0


def test_image_errors_come_from_load_image(effnet):
    with pytest.raises(VisionCLIPError, match="no such image file"):
        explain(effnet, "/nonexistent/eye.png", TWO, "glaucoma")


def test_tiny_vit_at_another_input_size_end_to_end():
    """A 112 px ViT (7x7 patch grid): the reshape follows the token count, not a fixed 14x14."""
    import copy

    import open_clip

    cfg = copy.deepcopy(open_clip.get_model_config("ViT-B-16"))
    cfg["embed_dim"] = 32
    cfg["vision_cfg"].update(image_size=112, layers=2, width=64, head_width=32, patch_size=16)
    cfg["text_cfg"].update(layers=1, width=32, heads=2)
    m = VisionCLIP.from_config(cfg, pretrained_towers=False)
    assert m.image_size == 112
    res = explain(m, _fundus(), TWO, "glaucoma")
    _check_map(res, _fundus())
    assert res.input_map.shape == (112, 112)


def test_cam_records_only_its_own_threads_forwards(effnet):
    """grad-cam's recorder is our public subclass: a forward from another thread (an app classifying meanwhile)
    adds nothing to the map's activations; one from the map's own thread does."""
    import threading

    from engine.saliency.explain import ImageEmbedder, ThisThreadActivationsAndGradients

    wrapper = ImageEmbedder(effnet.network)
    layer, _ = find_target_layer(effnet.network.visual)
    cam = METHODS["gradcam"](model=wrapper, target_layers=[layer])
    recorder = cam.activations_and_grads
    assert isinstance(recorder, ThisThreadActivationsAndGradients)
    x = torch.zeros(1, 3, 64, 64)
    try:
        with torch.no_grad():
            other = threading.Thread(target=wrapper, args=(x,))
            other.start()
            other.join()
            assert recorder.activations == []
            wrapper(x)
            assert len(recorder.activations) == 1
    finally:
        recorder.release()
