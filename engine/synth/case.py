"""The case: every clinical and acquisition decision for one render, sampled up front.

Layers read the case; they never decide which conditions, grades or quadrants an eye has. Everything
here comes from the "case" random stream, so changing a layer never changes the case.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

from engine.synth.primitives import layer_rng
from engine.synth.schema import CONDITION_KEYS

_OTHER = ["amd", "glaucoma", "pathologic_myopia", "hypertensive_retinopathy", "rvo", "erm",
          "optic_atrophy", "cataract"]
_OTHER_P = np.array([0.16, 0.17, 0.14, 0.12, 0.1, 0.08, 0.06, 0.17])
QUADRANTS = {(True, True): "superotemporal", (True, False): "superonasal",
             (False, True): "inferotemporal", (False, False): "inferonasal"}


@dataclass
class CaseOptions:
    """Pipeline-level settings of the case sampler (a pipeline may override them)."""
    other: tuple = tuple(_OTHER)
    other_p: tuple = tuple(_OTHER_P)
    normal_cdr: tuple = (0.2, 0.45)       # uniform range of the physiological cup-to-disc ratio
    glaucoma_cdr: tuple = (0.6, 0.88)     # uniform range of the glaucomatous vertical cup-to-disc ratio
    dr_grade_p: tuple = (0.3, 0.35, 0.2, 0.15)  # grades 1-4 when DR is asked for without a grade


@dataclass
class Case:
    seed: int
    size: int
    cond_key: int                          # crc of the forced conditions: part of every layer's seed
    labels: dict
    cdr: float                             # vertical cup-to-disc ratio
    cataract_density: float = 0.0          # 0 clear .. 1 dense lens opacity
    crvo: bool = False                     # central (all quadrants) vs branch vein occlusion
    rvo_quadrant: tuple | None = None      # (superior, temporal) for a branch occlusion
    amd_stage: float = 0.0                 # 0..1: hard drusen < 0.35 < soft; pigment > 0.5; late > 0.75
    extras: dict = field(default_factory=dict)

    def flag(self, key: str) -> bool:
        """Whether the case has a condition, by condition key ("glaucoma") or flag column ("is_glaucoma")."""
        col = CONDITION_KEYS.get(key, key)
        return bool(self.labels.get(col, 0))

    @property
    def dr_grade(self) -> int:
        return int(self.labels["dr_grade"])

    @property
    def quality(self) -> str:
        return self.labels["quality_grade"]

    def rng(self, name: str) -> np.random.Generator:
        """The random stream of the layer called ``name``."""
        return layer_rng(self.seed, self.cond_key, name)


def _conditions(rng, parsed, opts):
    keys = [k for k, _ in parsed]
    if parsed:
        return parsed, keys
    u = rng.random()
    if u < 0.30:
        keys = ["normal"]
    elif u < 0.60:
        keys = ["dr"]
        if rng.random() < 0.25:
            keys.append("dme")
        if rng.random() < 0.12:
            keys.append(str(rng.choice(["hypertensive_retinopathy", "cataract", "glaucoma"])))
    else:
        p = np.asarray(opts.other_p, float)
        keys = [str(rng.choice(list(opts.other), p=p / p.sum()))]
        if rng.random() < 0.15:
            extra = str(rng.choice(["cataract", "glaucoma", "erm", "amd", "hypertensive_retinopathy"]))
            if extra not in keys:
                keys.append(extra)
    return [(k, None) for k in keys], keys


def sample_case(seed: int, size: int, parsed: list, opts: CaseOptions | None = None) -> Case:
    """Sample the case for (seed, size, parsed conditions) from its own stream."""
    opts = opts or CaseOptions()
    cond_key = zlib.crc32(",".join(f"{k}:{g}" for k, g in parsed).encode())
    rng = layer_rng(seed, cond_key, "case")
    lab = {"dr_grade": 0, "eye_side": "right" if rng.random() < 0.5 else "left"}
    for flag in CONDITION_KEYS.values():
        lab[flag] = 0
    parsed, keys = _conditions(rng, parsed, opts)
    grade = None
    for k, g in parsed:
        if k == "dr":
            grade = g if g is not None else int(rng.choice([1, 2, 3, 4], p=list(opts.dr_grade_p)))
    if "dme" in keys and not grade:
        grade = int(rng.choice([2, 3, 4], p=[0.5, 0.3, 0.2]))
    lab["dr_grade"] = int(grade or 0)
    for k in keys:
        if k in CONDITION_KEYS:
            lab[CONDITION_KEYS[k]] = 1
    if lab[CONDITION_KEYS["dme"]] and lab["dr_grade"] == 0:
        lab[CONDITION_KEYS["dme"]] = 0
    q = rng.random()
    lab["quality_grade"] = "good" if q < 0.68 else ("usable" if q < 0.92 else "reject")
    if lab[CONDITION_KEYS["cataract"]] and lab["quality_grade"] == "good" and rng.random() < 0.7:
        lab["quality_grade"] = "usable"
    has = {k: bool(lab[c]) for k, c in CONDITION_KEYS.items()}
    lab["is_fundus"] = 1
    lab["is_optic_disc_readable"] = 1
    lab["is_retina_readable"] = 1
    cdr = float(rng.uniform(*(opts.glaucoma_cdr if has["glaucoma"] else opts.normal_cdr)))
    case = Case(seed=int(seed), size=int(size), cond_key=cond_key, labels=lab, cdr=cdr)
    if has["cataract"]:
        # early lens haze (vessels still visible) to a dense opacity: real cataract photos are mostly mild-moderate
        case.cataract_density = float(rng.uniform(0.15, 1.0))
        if case.cataract_density > 0.85:
            lab["quality_grade"] = "reject"
    if has["rvo"]:
        case.crvo = bool(rng.random() < 0.35)
        if not case.crvo:
            case.rvo_quadrant = (bool(rng.random() < 0.5), True)  # usually a temporal branch
    if has["amd"]:
        case.amd_stage = float(rng.random())
    if has["hypertensive_retinopathy"]:
        case.extras["disc_oedema"] = bool(rng.random() < 0.2)
    if lab["quality_grade"] == "reject":
        lab["is_retina_readable"] = 0
        if rng.random() < 0.6 or has["cataract"]:
            lab["is_optic_disc_readable"] = 0
    return case
