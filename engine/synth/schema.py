"""SynFundus-1M compatible label schema, condition keys and lenient row parsing."""
from __future__ import annotations

import json

from engine.errors import VisionCLIPError

LABEL_COLUMNS = [
    "idx", "dr_grade", "eye_side", "is_dme", "is_amd", "is_glaucoma", "is_pathologic_myopia",
    "is_hypertensive_retinopathy", "is_rvo", "is_erm", "is_optic_atrophy", "is_cataract",
    "is_fundus", "is_optic_disc_readable", "is_retina_readable", "quality_grade", "caption", "findings",
]

CONDITION_FLAGS = {
    "is_dme": "diabetic macular edema",
    "is_amd": "age-related macular degeneration",
    "is_glaucoma": "glaucoma",
    "is_pathologic_myopia": "pathologic myopia",
    "is_hypertensive_retinopathy": "hypertensive retinopathy",
    "is_rvo": "retinal vein occlusion",
    "is_erm": "epiretinal membrane",
    "is_optic_atrophy": "optic atrophy",
    "is_cataract": "cataract",
    "is_crp": "central serous chorioretinopathy",
}
DR_CLASS = "diabetic retinopathy"
NORMAL_CLASS = "normal"

# condition key -> flag column (dr handled separately)
CONDITION_KEYS = {
    "dme": "is_dme", "amd": "is_amd", "glaucoma": "is_glaucoma",
    "pathologic_myopia": "is_pathologic_myopia", "hypertensive_retinopathy": "is_hypertensive_retinopathy",
    "rvo": "is_rvo", "erm": "is_erm", "optic_atrophy": "is_optic_atrophy", "cataract": "is_cataract",
    "csc": "is_crp",
}
CONDITIONS = ["normal", "dr"] + list(CONDITION_KEYS)

DR_GRADE_NAMES = {
    0: "no diabetic retinopathy",
    1: "mild non-proliferative diabetic retinopathy",
    2: "moderate non-proliferative diabetic retinopathy",
    3: "severe non-proliferative diabetic retinopathy",
    4: "proliferative diabetic retinopathy",
}
QUALITY_GRADES = ("good", "usable", "reject")
FLAG_COLUMNS = list(CONDITION_FLAGS) + ["is_fundus", "is_optic_disc_readable", "is_retina_readable"]

_ALIASES = {name: key for key, name in
            [(k, CONDITION_FLAGS[v]) for k, v in CONDITION_KEYS.items()]}
_ALIASES.update({
    DR_CLASS: "dr", "diabetic_retinopathy": "dr", "diabetic macular oedema": "dme",
    "macular edema": "dme", "amd": "amd", "myopia": "pathologic_myopia",
    "pathological myopia": "pathologic_myopia", "hypertension": "hypertensive_retinopathy",
    "branch retinal vein occlusion": "rvo", "central retinal vein occlusion": "rvo",
    "healthy": "normal", "none": "normal",
})


def parse_condition(cond: str) -> tuple[str, int | None]:
    """Return (key, dr_grade or None) for one --conditions entry; raise VisionCLIPError if unknown."""
    if not isinstance(cond, str):
        raise VisionCLIPError(f"Condition must be a string, got {cond!r}.")
    c = cond.strip().lower()
    c2 = c.replace("-", " ").replace("_", " ")
    if c.replace(" ", "_") in CONDITIONS:
        return c.replace(" ", "_"), None
    if c2 in _ALIASES:
        return _ALIASES[c2], None
    if c in _ALIASES:
        return _ALIASES[c], None
    if len(c) == 3 and c.startswith("dr") and c[2] in "01234":
        return "dr", int(c[2])
    raise VisionCLIPError(
        f"Unknown condition {cond!r}; choose from {', '.join(CONDITIONS)}, dr0..dr4 or a class name.")


def parse_conditions(conditions) -> list[tuple[str, int | None]]:
    if conditions is None:
        return []
    if isinstance(conditions, str):
        conditions = [c for c in conditions.split(",") if c.strip()]
    out = [parse_condition(c) for c in conditions]
    keys = [k for k, _ in out]
    if "normal" in keys and any(k != "normal" for k in keys):
        raise VisionCLIPError("Condition 'normal' cannot be combined with other conditions.")
    return out


def labels_to_classes(labels: dict) -> list[str]:
    """Screening class names present in a labels dict (["normal"] when none)."""
    out = []
    try:
        if int(labels.get("dr_grade", 0) or 0) > 0:
            out.append(DR_CLASS)
    except (TypeError, ValueError):
        raise VisionCLIPError(f"Bad dr_grade value {labels.get('dr_grade')!r}.") from None
    for flag, name in CONDITION_FLAGS.items():
        v = labels.get(flag, 0)
        try:
            v = int(float(v or 0))
        except (TypeError, ValueError):
            raise VisionCLIPError(f"Bad {flag} value {v!r}.") from None
        if v:
            out.append(name)
    return out or [NORMAL_CLASS]


def _to_int(col, v, lo, hi):
    if v is None or (isinstance(v, str) and v.strip() == ""):
        return 0
    try:
        f = float(str(v).strip())
    except ValueError:
        s = str(v).strip().lower()
        if s in ("true", "yes", "y"):
            return 1
        if s in ("false", "no", "n"):
            return 0
        raise VisionCLIPError(f"Bad value {v!r} in column {col}: expected an integer {lo}-{hi}.") from None
    if f != int(f) or not lo <= int(f) <= hi:
        raise VisionCLIPError(f"Bad value {v!r} in column {col}: expected an integer {lo}-{hi}.")
    return int(f)


def normalise_labels(row: dict) -> dict:
    """Read a SynFundus-1M style row leniently; raise VisionCLIPError naming a bad value."""
    if not isinstance(row, dict):
        raise VisionCLIPError("A label row must be a mapping of column names to values.")
    r = {str(k).strip().lower(): v for k, v in row.items() if k is not None}
    out: dict = {}
    if "idx" in r and r["idx"] not in (None, ""):
        out["idx"] = str(r["idx"]).strip()
    out["dr_grade"] = _to_int("dr_grade", r.get("dr_grade"), 0, 4)
    side = str(r.get("eye_side", "") or "").strip().lower()
    side_map = {"l": "left", "left": "left", "os": "left", "0": "left",
                "r": "right", "right": "right", "od": "right", "1": "right", "": "right"}
    if side not in side_map:
        raise VisionCLIPError(f"Bad value {r.get('eye_side')!r} in column eye_side: expected left or right.")
    out["eye_side"] = side_map[side]
    for flag in CONDITION_FLAGS:
        out[flag] = _to_int(flag, r.get(flag), 0, 1)
    for flag in ("is_fundus", "is_optic_disc_readable", "is_retina_readable"):
        out[flag] = _to_int(flag, r.get(flag), 0, 1) if r.get(flag) not in (None, "") else 1
    q = r.get("quality_grade")
    if q is None or str(q).strip() == "":
        out["quality_grade"] = "good"
    else:
        qs = str(q).strip().lower()
        num = {"0": "good", "1": "usable", "2": "reject", "bad": "reject", "poor": "reject",
               "excellent": "good", "adequate": "usable"}
        qs = num.get(qs, qs)
        if qs not in QUALITY_GRADES:
            raise VisionCLIPError(f"Bad value {q!r} in column quality_grade: expected good, usable or reject.")
        out["quality_grade"] = qs
    if r.get("caption") not in (None, ""):
        out["caption"] = str(r["caption"])
    f = r.get("findings")
    if f not in (None, ""):
        if isinstance(f, str):
            try:
                f = json.loads(f)
            except json.JSONDecodeError:
                raise VisionCLIPError("Bad value in column findings: not a JSON list.") from None
        if not isinstance(f, list):
            raise VisionCLIPError("Bad value in column findings: not a JSON list.")
        out["findings"] = f
    return out
