"""The renderer variants of the training trials (research/experiments.md), registered by name so that
`python -m research synth --pipeline NAME` and a trial config's `val_pipeline` can choose them.
Importing ``research`` registers them; the library itself names only v1 and v2."""
from __future__ import annotations

from dataclasses import replace

from engine.synth.layer import LAYERS
from engine.synth.pipeline import PIPELINES, Pipeline, register_pipeline

V1, V2 = PIPELINES["v1"], PIPELINES["v2"]

# issue 35 lever 1 (trial 49): v1 with healthy-eye hard negatives: light reflexes, a few small hard
# drusen, myelinated fibres and physiological cups over the population's range on healthy eyes, and
# a mild camera haze (not a cataract) on every eye without cataract; captions stay label-built
V1_HEALTHY = replace(V1.with_layer("normal_variants", before="lesion_composite", name="v1-healthy")
                     .with_layer("camera_haze", before="defocus", name="v1-healthy"),
                     case=replace(V1.case, normal_cdr=(0.1, 0.6)))

TRIAL_PIPELINES = [
    # issue 25 lever 1: half the renders get each structure's colour and contrast drawn at random
    # (engine/synth/randomisation/appearance.py), before the camera and media layers
    V2.with_layer(("structure_appearance", {"p": 0.5}), before="illumination", name="v2-appearance"),
    # issue 25 trial 41: v2 with v1's rule that only myopic and glaucomatous discs carry peripapillary
    # atrophy (every v2 run lost pathologic-myopia AUC on real photographs; v1 alone on renderer 2.0 did not)
    V2.with_params("disc", {"p_ppa_normal": 0.0}, name="v2-ppa-myopic"),
    # issue 25 trial 43: v2 with every rule that a myopia reading could lean on set back to v1's (no
    # choroidal texture outside myopia, v1's near-round healthy discs, atrophy only where v1 draws it)
    V2.with_params("disc", {"p_ppa_normal": 0.0, "ecc": (0.88, 1.0)}, name="v2-myopia-v1")
      .with_params("choroid", {"texture": 0.0}, name="v2-myopia-v1"),
    # issue 25 trial 44: v1 with v2's optic disc drawing (size, colour, glow, soft margins, cup shape) and
    # nothing else of v2: is the disc's look what costs pathologic myopia on real photographs?
    V1.with_params("disc", V2.layer_params("disc"), name="v1-v2disc"),
    V1_HEALTHY,
]
# issue 35 trial 51: trial 49's pipeline without what touches lesion appearance (small hard drusen on
# healthy eyes, the haze that also softens diseased eyes' lesions): reflexes, sheen, myelinated fibres
# and wide physiological cups only
_NO_DRUSEN = V1_HEALTHY.with_params("normal_variants", {"p_drusen": 0.0}, name="v1-healthy-anatomy")
TRIAL_PIPELINES.append(Pipeline("v1-healthy-anatomy", [e for e in _NO_DRUSEN.layers if e != "camera_haze"], V1_HEALTHY.case))

# issue 35 trial 52: v1 with only the physiological cup range of trial 49 (cup-to-disc 0.1-0.6 on healthy
# discs): does the wide cup alone cost real glaucoma AUC, as trial 51 suggests?
TRIAL_PIPELINES.append(replace(V1, name="v1-wide-cups", case=replace(V1.case, normal_cdr=(0.1, 0.6))))

# issue 35 trial 53: trial 52's healthy cup range with glaucoma renders told apart by the rim, as trial 52's
# reading asks: v1 plus the rim-sign layer (notch, disc haemorrhage, nerve-fibre wedge, bayoneting, drawn
# more often than v2 does), vertically elongated cups displaced towards a pole, and no extra pallor of the
# glaucomatous cup; everything else of v1 (disc size and colour, which pathologic myopia relies on) is kept
_RIM = {"glaucoma_cup_alpha": (0.5, 0.85),  # the disc layer's healthy cup_alpha
        "glaucoma_cup_width": (0.7, 0.9), "glaucoma_cup_drop": (0.05, 0.18)}
_RIM_SIGNS = ("glaucoma_signs", {"p_notch": 0.8, "p_haemorrhage": 0.4, "p_rnfl": 0.7, "p_bayonet": 0.8})
_WIDE_RIM = V1.with_params("disc", _RIM, name="v1-wide-cups-rim").with_layer(_RIM_SIGNS, before="illumination",
                                                                            name="v1-wide-cups-rim")
TRIAL_PIPELINES.append(replace(_WIDE_RIM, case=replace(V1.case, normal_cdr=(0.1, 0.6))))
# issue 35 trial 54: trial 53's glaucoma rim without the wide healthy cups (v1's cup-to-disc 0.2-0.45):
# what do the rim signs alone do to real glaucoma and to the healthy eyes called normal?
TRIAL_PIPELINES.append(replace(_WIDE_RIM, name="v1-rim"))

# issue 35 trial 55: v1 with the healthy eyes' light reflexes (foveal pinpoint, macular ring, arcade
# sheen) and myelinated fibres of trial 49, and none of its cups, small drusen or haze: real healthy
# eyes give most of their P(abnormal) to AMD and DR, whose renders are bright specks the reflexes mimic
TRIAL_PIPELINES.append(V1.with_layer(("normal_variants", {"p_drusen": 0.0}), before="lesion_composite",
                                     name="v1-reflexes"))

# issue 35 trials 61 and 63: v1 with its small DR lesions (microaneurysms, early dot-blot haemorrhages,
# hard exudates) drawn at another size; severe-grade haemorrhages and every other finding as v1 draws them
_SMALL_DR_LESIONS = ("microaneurysms", "dot_blot_haemorrhages", "hard_exudates")


def _dr_lesions_scaled(scale: float, name: str, extra: dict[str, dict] | None = None) -> Pipeline:
    """v1 with the small DR lesions' radii (their layers' defaults) times ``scale``, plus ``extra`` params per layer."""
    pipeline = V1
    for layer in _SMALL_DR_LESIONS:
        params = {"radius": LAYERS[layer].params["radius"] * scale, **(extra or {}).get(layer, {})}
        pipeline = pipeline.with_params(layer, params, name=name)
    return pipeline


# trial 61: at 1 / 1.6 of their size, the scale at which trial 58's shipped weights read eyepacs_dev best
# (512 px against 320); microaneurysms also fainter, as a lesion under the drawing's 0.6-px floor would be
# once blurred
SMALL_LESION_SCALE = 0.625
TRIAL_PIPELINES.append(_dr_lesions_scaled(SMALL_LESION_SCALE, "v1-small-lesions",
                                          {"microaneurysms": {"dot_contrast": (0.4, 0.9)}}))
# trial 63: the other direction, at 1.5 times their size: trial 61's smaller lesions lowered grade-1 DR on
# eyepacs_dev (0.51 -> 0.39), and the shipped weights read its lesions best when enlarged (trial 58)
LARGE_LESION_SCALE = 1.5
TRIAL_PIPELINES.append(_dr_lesions_scaled(LARGE_LESION_SCALE, "v1-large-lesions"))

# issue 35 trial 66: v1 with the vessels dived into the cup (engine/synth/anatomy/vessels.py CupVessels) on
# every disc: fainter, out of focus and displaced inside the cup, so that the cup's edge shows by the
# vessels' bends as on real discs (trial 65: render discs show it by pallor alone)
TRIAL_PIPELINES.append(V1.with_layer("cup_vessels", before="vessel_composite", name="v1-cup-vessels"))

for _pipeline in TRIAL_PIPELINES:
    register_pipeline(_pipeline)
