"""Natural-language captions built from TRUE rendering parameters (or labels alone)."""
from __future__ import annotations

import numpy as np

from engine.synth import pipeline as _pipeline  # noqa: F401  (imports every layer, filling FINDING_WORDS)
from engine.synth.layer import FINDING_WORDS  # finding name -> phrasings, registered by the layer that draws it
from engine.synth.schema import CONDITION_FLAGS, DR_GRADE_NAMES

NORMAL_PHRASES = [
    "A normal fundus photograph.",
    "Normal retina: healthy optic disc, normal vessels and a clear macula.",
    "A healthy normal fundus with no signs of disease.",
    "Colour fundus photograph of a normal eye.",
    "No abnormality detected; normal retina.",
]

CLASS_SYNONYMS = {
    "diabetic macular edema": ["diabetic macular edema", "diabetic macular oedema", "DME"],
    "age-related macular degeneration": ["age-related macular degeneration", "AMD", "macular degeneration"],
    "glaucoma": ["glaucoma", "glaucomatous optic neuropathy", "suspected glaucoma"],
    "pathologic myopia": ["pathologic myopia", "pathological myopia", "high myopia with myopic maculopathy"],
    "hypertensive retinopathy": ["hypertensive retinopathy"],
    "retinal vein occlusion": ["retinal vein occlusion", "a retinal vein occlusion"],
    "epiretinal membrane": ["epiretinal membrane"],
    "optic atrophy": ["optic atrophy", "optic nerve atrophy"],
    "cataract": ["cataract", "lens opacity (cataract)"],
}

QUALITY_REMARKS = {
    "good": ["Image quality is good.", "Good quality image.", "", "", ""],
    "usable": ["Image quality is usable.", "Slightly blurred but gradable image.", "Usable image quality with uneven illumination.", ""],
    "reject": ["Poor quality image, ungradable.", "Image quality is insufficient for grading.", "Very poor image quality."],
}


_QUADS = ("superotemporal", "superonasal", "inferotemporal", "inferonasal")


def _with_location(w, loc):
    """Attach a location phrase to a finding phrase with correct grammar."""
    if loc == "diffuse":
        if w.startswith(("a ", "an ")):
            return w
        return w if w.startswith(("diffuse", "generalised")) else f"diffuse {w}"
    if loc == "arterioles" or ("disc" in w and loc in ("optic disc", "peripapillary")) or ("cup" in w and loc == "optic disc"):
        return w
    if loc in _QUADS:
        return f"{w} in the {loc} quadrant"
    if loc == "fovea":
        return f"{w} at the fovea"
    if loc == "peripapillary":
        return f"{w} around the optic disc"
    if loc == "optic disc":
        return f"{w} at the optic disc"
    if loc.startswith(("temporal to", "at ", "in ", "around ")):
        return f"{w} {loc}"
    if loc.startswith(("all ", "two ")):
        return f"{w} in {loc}"
    return f"{w} in the {loc}"


def _rng(rng):
    return rng if rng is not None else np.random.default_rng()


def _pick(rng, xs):
    return xs[int(rng.integers(len(xs)))]


def _cond_phrases(labels, rng, verbatim=0.7):
    out = []
    g = int(labels.get("dr_grade", 0) or 0)
    if g > 0:
        name = DR_GRADE_NAMES[g]
        if rng.random() < 0.3:
            name = "diabetic retinopathy"
        out.append(name)
    for flag, cls in CONDITION_FLAGS.items():
        if int(labels.get(flag, 0) or 0):
            syn = CLASS_SYNONYMS.get(cls, [cls])
            out.append(cls if rng.random() < verbatim else _pick(rng, syn))
    return out


def _join(xs):
    if not xs:
        return ""
    if len(xs) == 1:
        return xs[0]
    return ", ".join(xs[:-1]) + " and " + xs[-1]


def label_caption(labels: dict, rng: np.random.Generator | None = None) -> str:
    """Short label-style caption, e.g. 'A fundus photograph of moderate non-proliferative diabetic retinopathy.'"""
    rng = _rng(rng)
    conds = _cond_phrases(labels, rng, verbatim=0.85)
    if not conds:
        return _pick(rng, ["A fundus photograph of a normal retina.", "A normal fundus photograph.",
                           "A retinal image: normal.", "Normal."])
    tmpl = _pick(rng, ["A fundus photograph of {}.", "A retinal image showing {}.", "{}.",
                       "Fundus photo with {}.", "A colour fundus photograph with signs of {}."])
    s = tmpl.format(_join(conds))
    return s[0].upper() + s[1:]


def build_caption(labels: dict, findings: list | None = None, rng: np.random.Generator | None = None) -> str:
    """Clinical description from true labels (and findings when available). Never claims absent findings."""
    rng = _rng(rng)
    parts = []
    side = labels.get("eye_side")
    eye = ""
    if side in ("left", "right") and rng.random() < 0.6:
        eye = _pick(rng, [f"{side} eye", f"{side} fundus", "OD" if side == "right" else "OS"])
    conds = _cond_phrases(labels, rng)
    if conds:
        lead = _pick(rng, ["Fundus photograph of the {eye} showing {c}.", "{E}: {c}.", "Colour fundus image with {c}{ineye}.",
                           "Findings consistent with {c}{ineye}.", "Retinal photograph: {c}."])
        s = lead.format(eye=eye or "eye", E=(eye or "fundus").capitalize(), c=_join(conds),
                        ineye=f" in the {eye}" if eye and not eye.startswith("O") else "")
        parts.append(s[0].upper() + s[1:])
    else:
        s = _pick(rng, NORMAL_PHRASES)
        if eye and rng.random() < 0.5:
            s = s[:-1] + f" ({eye})."
        parts.append(s)
    present = set()
    if findings:
        fs = list(findings)
        rng.shuffle(fs)
        descr = []
        for f in fs:
            name = f.get("name", "")
            present.add(name)
            words = FINDING_WORDS.get(name, [name.replace("_", " ")])
            w = _pick(rng, words)
            loc = f.get("location") or ""
            sev = f.get("severity") or ""
            bits = _with_location(w, loc) if loc and rng.random() < 0.8 else w
            if sev and rng.random() < 0.4 and not sev[0].isdigit():
                bits = f"{bits} ({sev})"
            elif sev.startswith("cup-to-disc"):
                bits = f"{bits}, {sev}"
            descr.append(bits)
        if descr:
            parts.append(_pick(rng, ["There are {}.", "Findings include {}.", "The image shows {}.", "Visible: {}."]).format(_join(descr)))
    # explicit negatives: only for things truly absent
    if rng.random() < 0.5:
        g = int(labels.get("dr_grade", 0) or 0)
        neg = []
        if g == 0 and not int(labels.get("is_rvo", 0) or 0) and not int(labels.get("is_hypertensive_retinopathy", 0) or 0):
            if not present & {"dot_blot_haemorrhages", "flame_haemorrhages", "preretinal_haemorrhage", "vitreous_haemorrhage"}:
                neg.append("no haemorrhages")
            neg.append("no signs of diabetic retinopathy")
        if g < 4 and not present & {"neovascularisation_disc", "neovascularisation_elsewhere"} and findings is not None:
            neg.append("no neovascularisation")
        if not int(labels.get("is_amd", 0) or 0) and findings is not None and rng.random() < 0.4:
            neg.append("no drusen")
        if neg:
            k = int(rng.integers(1, len(neg) + 1))
            sel = [neg[i] for i in sorted(rng.choice(len(neg), size=k, replace=False))]
            parts.append(_pick(rng, ["{}.", "Notably, {}.", "We see {}."]).format(_join(sel)))
            parts[-1] = parts[-1][0].upper() + parts[-1][1:]
        if not int(labels.get("is_glaucoma", 0) or 0) and not int(labels.get("is_optic_atrophy", 0) or 0) and rng.random() < 0.2:
            parts.append("The cup-to-disc ratio is normal.")
    q = labels.get("quality_grade", "good")
    rem = _pick(rng, QUALITY_REMARKS.get(q, [""]))
    if rem:
        parts.append(rem)
    return " ".join(p for p in parts if p)
