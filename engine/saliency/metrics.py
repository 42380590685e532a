"""Faithfulness of saliency maps: pointing game, energy in lesion masks, baselines, the library's
ROAD / confidence-change metrics, and the Adebayo et al. (2018) model-randomisation sanity check.

Maps and masks are (H, W) arrays on the same grid; ``fov`` is the fundus field of view (bool).
"""
from __future__ import annotations

import copy
from typing import Callable, Iterable, Mapping

import numpy as np
import torch
from scipy import ndimage, stats

# Screening class -> the synthetic generator's mask names that show it. Diffuse findings that cover
# the whole field (tessellation, media opacity) say nothing about localisation: the pointing game is
# trivially won on them, so they are left out (cataract has no localised finding at all).
LESION_MASKS: dict[str, tuple[str, ...]] = {
    "diabetic retinopathy": ("microaneurysms", "dot_blot_haemorrhages", "flame_haemorrhages", "hard_exudates",
                             "cotton_wool_spots", "irma", "venous_beading", "neovascularisation_disc",
                             "neovascularisation_elsewhere", "laser_scars"),
    "diabetic macular edema": ("macular_oedema", "hard_exudates"),
    "age-related macular degeneration": ("drusen_soft", "drusen_hard", "pigment_changes", "geographic_atrophy",
                                         "cnv_scar"),
    "glaucoma": ("enlarged_cup",),
    "pathologic myopia": ("peripapillary_atrophy", "lacquer_cracks", "chorioretinal_atrophy", "tilted_disc"),
    "hypertensive retinopathy": ("arteriolar_narrowing", "av_nicking", "copper_wiring", "silver_wiring",
                                 "flame_haemorrhages", "cotton_wool_spots", "disc_oedema"),
    "retinal vein occlusion": ("vein_dilation", "flame_haemorrhages", "dot_blot_haemorrhages", "cotton_wool_spots",
                               "macular_oedema"),
    "epiretinal membrane": ("epiretinal_membrane",),
    "optic atrophy": ("disc_pallor",),
}


def condition_mask(masks: Mapping[str, np.ndarray], class_name: str, shape: tuple[int, int] | None = None) -> np.ndarray | None:
    """Union of the lesion masks that show ``class_name``; None when the image has none of them."""
    names = LESION_MASKS.get(class_name.lower(), ())
    found = [np.asarray(masks[n], dtype=bool) for n in names if n in masks and np.any(masks[n])]
    if not found:
        return None
    out = np.zeros(shape or found[0].shape, dtype=bool)
    for m in found:
        out |= m
    return out


# --- localisation -------------------------------------------------------------------------------
def pointing_game(saliency: np.ndarray, mask: np.ndarray, tolerance: int = 0) -> bool:
    """True when the map's maximum falls in ``mask`` (grown by ``tolerance`` pixels; 15 in Zhang et al.)."""
    saliency = np.asarray(saliency, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    if saliency.shape != mask.shape:
        raise ValueError(f"map {saliency.shape} and mask {mask.shape} differ in shape")
    if not mask.any() or not np.isfinite(saliency).any():
        return False
    if tolerance > 0:
        yy, xx = np.ogrid[-tolerance:tolerance + 1, -tolerance:tolerance + 1]
        mask = ndimage.binary_dilation(mask, structure=(xx * xx + yy * yy) <= tolerance * tolerance)
    peak = np.unravel_index(int(np.nanargmax(saliency)), saliency.shape)
    return bool(mask[peak])


def energy_fraction(saliency: np.ndarray, mask: np.ndarray, fov: np.ndarray | None = None) -> float:
    """Share of the map's energy (sum of its non-negative values) inside ``mask``, within ``fov``."""
    s = np.clip(np.nan_to_num(np.asarray(saliency, dtype=np.float64)), 0, None)
    m = np.asarray(mask, dtype=bool)
    if fov is not None:
        fov = np.asarray(fov, dtype=bool)
        s = s * fov
        m = m & fov
    total = s.sum()
    return float(s[m].sum() / total) if total > 0 else float("nan")


def energy_ratio(saliency: np.ndarray, mask: np.ndarray, fov: np.ndarray | None = None) -> float:
    """Energy fraction in the mask divided by the mask's share of the field of view.

    1.0 is what a uniform map scores; > 1 means the map concentrates on the lesions.
    """
    m = np.asarray(mask, dtype=bool)
    area = np.asarray(fov, dtype=bool) if fov is not None else np.ones_like(m)
    share = (m & area).sum() / max(int(area.sum()), 1)
    if share <= 0:
        return float("nan")
    return energy_fraction(saliency, mask, fov) / share


def best_map_on_grid(input_mask: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """The most concentrated map a layer with a ``grid`` of cells can give for ``input_mask`` (on the model
    input, S x S): each cell's share of lesion, resized back to S x S bilinearly as grad-cam does.

    Its energy ratio is the ceiling for any CAM of that layer: on a last stage's 10 x 10 grid, scattered
    DR dots on 2% of the fundus cap it near 2, whatever the method.
    """
    import cv2

    m = np.asarray(input_mask, dtype=np.float32)
    gh, gw = int(grid[0]), int(grid[1])
    cells = cv2.resize(m, (gw, gh), interpolation=cv2.INTER_AREA)
    return cv2.resize(cells, (m.shape[1], m.shape[0]), interpolation=cv2.INTER_LINEAR)


# --- baselines ----------------------------------------------------------------------------------
def uniform_random_map(shape: tuple[int, int], fov: np.ndarray | None = None, seed: int | None = 0) -> np.ndarray:
    """I.i.d. uniform noise: what chance scores."""
    out = np.random.default_rng(seed).random(shape).astype(np.float32)
    return out * fov if fov is not None else out


def centre_bias_map(shape: tuple[int, int], fov: np.ndarray | None = None, sigma: float = 0.5) -> np.ndarray:
    """An isotropic Gaussian on the centre of the field of view (sigma as a fraction of its radius)."""
    h, w = shape
    if fov is not None and np.any(fov):
        ys, xs = np.nonzero(fov)
        cy, cx = (ys.min() + ys.max()) / 2.0, (xs.min() + xs.max()) / 2.0
        radius = max(ys.max() - ys.min(), xs.max() - xs.min()) / 2.0
    else:
        cy, cx, radius = (h - 1) / 2.0, (w - 1) / 2.0, min(h, w) / 2.0
    yy, xx = np.mgrid[0:h, 0:w]
    out = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2.0 * (sigma * radius) ** 2)).astype(np.float32)
    return out * fov if fov is not None else out


# --- comparing two maps -------------------------------------------------------------------------
def spearman(a: np.ndarray, b: np.ndarray, size: int | None = 64) -> float:
    """Spearman rank correlation of two maps (resampled to size x size first); 0 if either is constant."""
    a, b = _resample(a, size), _resample(b, size)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    r = stats.spearmanr(a.ravel(), b.ravel()).statistic
    return float(r) if np.isfinite(r) else 0.0


def ssim(a: np.ndarray, b: np.ndarray, size: int | None = 64) -> float:
    """Structural similarity of two [0, 1] maps."""
    from skimage.metrics import structural_similarity

    return float(structural_similarity(_resample(a, size), _resample(b, size), data_range=1.0))


def _resample(m: np.ndarray, size: int | None) -> np.ndarray:
    m = np.nan_to_num(np.asarray(m, dtype=np.float32))
    if size is None or m.shape == (size, size):
        return m
    import cv2

    return cv2.resize(m, (size, size), interpolation=cv2.INTER_AREA)


# --- the library's perturbation metrics ------------------------------------------------------------
def library_faithfulness(network: torch.nn.Module, input_tensor: torch.Tensor, input_map: np.ndarray,
                         target: Callable, percentiles: Iterable[int] = (20, 40, 60, 80)) -> dict[str, float]:
    """pytorch_grad_cam.metrics on one (3, S, S) input and its (S, S) map.

    road_combined: ROADCombined, (LeRF - MoRF)/2 of the target score after removing (with ROAD's
        noisy linear imputation) the least / most relevant pixels, averaged over ``percentiles``;
        higher is more faithful (0 for an uninformative map). Skipped when ``percentiles`` is empty.
    cam_mult_change: CamMultImageConfidenceChange, change of the target score when the input is
        multiplied by the map; higher (less negative) is better.
    """
    from pytorch_grad_cam.metrics.cam_mult_image import CamMultImageConfidenceChange
    from pytorch_grad_cam.metrics.road import ROADCombined

    from .explain import ImageEmbedder

    model = ImageEmbedder(network).eval()
    device = next(model.parameters()).device
    x = input_tensor.detach().float().to(device)
    if x.ndim == 3:
        x = x[None]
    cams = np.asarray(input_map, dtype=np.float32)[None]
    out = {}
    percentiles = list(percentiles)
    if percentiles:  # ROAD solves a sparse system per percentile: seconds each on CPU
        road = ROADCombined(percentiles=percentiles)(x, cams, [target], model)
        out["road_combined"] = float(np.asarray(road).ravel()[0])
    mult = CamMultImageConfidenceChange()(x, cams, [target], model)
    out["cam_mult_change"] = float(np.asarray(mult).ravel()[0])
    return out


def road_curve(network: torch.nn.Module, input_tensor: torch.Tensor, input_map: np.ndarray, target: Callable,
               percentages: Iterable[int] = (5, 20, 50)) -> dict[str, list[float]]:
    """ROAD deletion and insertion curves of one (S, S) map: for each ``p`` in ``percentages``, the change of
    the target score after ROAD's noisy linear imputation of the ``p`` % most relevant pixels ("deletion": a
    faithful map drops the score fast) and of all but the ``p`` % most relevant ("insertion": a faithful map
    keeps the score with few pixels kept)."""
    from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirst, ROADMostRelevantFirst

    from .explain import ImageEmbedder

    model = ImageEmbedder(network).eval()
    x = input_tensor.detach().float().to(next(model.parameters()).device)
    x = x[None] if x.ndim == 3 else x
    cams = np.asarray(input_map, dtype=np.float32)[None]
    out = {"percentages": [int(p) for p in percentages], "deletion": [], "insertion": []}
    for p in out["percentages"]:
        # the library's percentile is a threshold: MoRF(q) imputes the pixels above the q-th percentile of the
        # map, LeRF(q) those below it
        out["deletion"].append(float(np.asarray(ROADMostRelevantFirst(100 - p)(x, cams, [target], model)).ravel()[0]))
        out["insertion"].append(float(np.asarray(ROADLeastRelevantFirst(100 - p)(x, cams, [target], model)).ravel()[0]))
    return out


# --- Adebayo sanity check ---------------------------------------------------------------------------
def randomize_image_tower(model, seed: int = 0):
    """A copy of a VisionCLIP whose image tower (trunk and projection) has freshly initialised weights."""
    clone = copy.copy(model)
    network = copy.copy(model.network)  # share the text tower; copy only the image tower
    network._modules = type(model.network._modules)(model.network._modules)
    network.visual = copy.deepcopy(model.network.visual)
    clone.network = network
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in clone.network.visual.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset) and module is not clone.network.visual:
                reset()
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):  # make BN non-trivial, like a
                    module.weight.data.normal_(1.0, 0.1)  # trained net's affine, not the identity
                    module.bias.data.normal_(0.0, 0.1)
        for p in clone.network.visual.parameters(recurse=False):
            torch.nn.init.normal_(p, std=0.02)
    clone.network.visual.eval()
    return clone


def sanity_check(model, image, prompt_set, class_name: str, method: str | None = None, seed: int = 0, *,
                 target: str | None = None, layers=None, randomised=None, trained=None) -> dict[str, float]:
    """Maps of the model and of its image-tower-randomised copy: low similarity passes the check.

    ``randomised`` (from ``randomize_image_tower``) and ``trained`` (the model's ``explain`` result for these
    arguments) may be passed in to reuse them across calls."""
    from .explain import DEFAULT_METHOD, explain

    kw = dict(method=method or DEFAULT_METHOD, target=target, layers=layers)
    trained = trained if trained is not None else explain(model, image, prompt_set, class_name, **kw)
    randomised = randomised if randomised is not None else randomize_image_tower(model, seed)
    random = explain(randomised, image, prompt_set, class_name, **kw)
    return {"spearman": spearman(trained.input_map, random.input_map),
            "ssim": ssim(trained.input_map, random.input_map)}
