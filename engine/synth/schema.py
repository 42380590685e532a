"""The SynFundus-1M label schema, the engine's condition keys, and row parsing.

Two vocabularies meet here:

* **The engine's label dict** (``SyntheticFundus.labels``, what captions and classes are built
  from): descriptive flag names (``is_glaucoma``, ``is_pathologic_myopia``, ...; ``is_crp`` for
  CSC), ``eye_side`` "left"/"right", ``quality_grade`` a word.
* **The file** (``labels.csv``): the real SynFundus-1M columns, exactly, in their order
  (:data:`SYNFUNDUS_COLUMNS`), then this project's extensions (:data:`EXTENSION_COLUMNS`).
  :func:`to_file_row` writes one; :func:`normalise_labels` reads one back (also the project's
  older files, whose descriptive column names are aliases: :data:`COLUMN_ALIASES`);
  :func:`check_header` says which columns a whole file lacks or has in excess.

``eye_side`` is 0/1 in SynFundus-1M, with no published key; one public script reads 0 as right
and 1 as left, which is assumed here (``eye_side_zero="right"``) and can be switched everywhere a
file is read or written (``eye_side_zero="left"``).
"""
from __future__ import annotations

import json
import warnings

from engine.errors import VisionCLIPError

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

# condition key -> engine label flag (dr handled separately; FLAG_TO_FILE gives the SynFundus-1M column)
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

_ALIASES = {name: key for key, name in
            [(k, CONDITION_FLAGS[v]) for k, v in CONDITION_KEYS.items()]}
_ALIASES.update({
    DR_CLASS: "dr", "diabetic_retinopathy": "dr", "diabetic macular oedema": "dme",
    "macular edema": "dme", "amd": "amd", "myopia": "pathologic_myopia",
    "pathological myopia": "pathologic_myopia", "hypertension": "hypertensive_retinopathy",
    "branch retinal vein occlusion": "rvo", "central retinal vein occlusion": "rvo",
    "healthy": "normal", "none": "normal",
    "central serous retinopathy": "csc", "csr": "csc", "crp": "csc",
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


# ------------------------------------------------------------------------------ the file
#: The real SynFundus-1M labels.csv columns, in their order (images are ``<idx>.png``).
SYNFUNDUS_COLUMNS = [
    "dr_grade", "eye_side", "is_amd", "is_aon", "is_crp", "is_dm", "is_dme", "is_em", "is_gc", "is_htr",
    "is_pm", "is_rvo", "is_fundus", "is_optic_disc_readable", "is_retinal_region_readable",
]
#: What ``visionclip synth`` writes after them. ``idx`` (the image's file stem, which is also the
#: row position) comes last: the real file names images by row position and has no such column,
#: but a copy that was filtered or shuffled keeps its images only through it.
EXTENSION_COLUMNS = ["is_cataract", "quality_grade", "caption", "findings", "generator_version", "idx"]
LABEL_COLUMNS = SYNFUNDUS_COLUMNS + EXTENSION_COLUMNS
#: Written when the renderer does not say its own version (the single-function renderer).
LEGACY_GENERATOR_VERSION = "1.0"

#: file column -> engine label flag (flags whose names differ; the rest are spelt the same)
FILE_TO_FLAG = {
    "is_aon": "is_optic_atrophy", "is_em": "is_erm", "is_gc": "is_glaucoma",
    "is_htr": "is_hypertensive_retinopathy", "is_pm": "is_pathologic_myopia",
    "is_retinal_region_readable": "is_retina_readable",
}
FLAG_TO_FILE = {v: k for k, v in FILE_TO_FLAG.items()}
#: older column names (this project's files before the exact schema) -> SynFundus-1M column
COLUMN_ALIASES = {**FLAG_TO_FILE, "is_csc": "is_crp"}
#: columns that name the image rather than describe it (pandas writes its index with an empty name)
IMAGE_NAME_COLUMNS = ("idx", "id", "image", "file_name", "filename", "path", "")
#: columns an older project file may lack: CSC did not exist, is_dm follows from dr_grade/is_dme
LEGACY_OPTIONAL = ("is_crp", "is_dm")
READABILITY_FLAGS = ("is_fundus", "is_optic_disc_readable", "is_retina_readable")
EYE_SIDE_ZERO = ("right", "left")


class LabelSchemaWarning(UserWarning):
    """A labels.csv column this project does not know (it is ignored)."""


def canonical_column(name: str) -> str:
    """The SynFundus-1M (or extension) name of a header cell: trimmed, lower case, aliases resolved."""
    c = str(name).strip().lower().lstrip("\ufeff")
    return COLUMN_ALIASES.get(c, c)


def check_header(fieldnames, source: str = "labels.csv") -> dict:
    """Check a labels.csv header; return {canonical column: header cell as written}.

    Every SynFundus-1M column must be there (under its name or an older alias): a missing one is a
    VisionCLIPError naming it, since reading it as 0 would silently call every image free of that
    condition. Older project files (recognised by an alias) may lack CSC and is_dm. An unknown
    column is ignored with a LabelSchemaWarning that names it.
    """
    header = [h for h in (fieldnames or []) if h is not None]
    found: dict = {}
    unknown, legacy = [], False
    for h in header:
        raw = str(h).strip().lower().lstrip("\ufeff")
        c = canonical_column(h)
        legacy |= raw in COLUMN_ALIASES
        if c in found:
            raise VisionCLIPError(f"{source}: columns {found[c]!r} and {h!r} both give {c}.")
        if c in LABEL_COLUMNS or c in IMAGE_NAME_COLUMNS or c.startswith("unnamed:"):
            found[c] = h
        else:
            unknown.append(str(h))
    missing = [c for c in SYNFUNDUS_COLUMNS if c not in found and not (legacy and c in LEGACY_OPTIONAL)]
    if missing:
        raise VisionCLIPError(f"{source} lacks SynFundus-1M column(s) {', '.join(missing)} "
                              f"(header: {', '.join(map(str, header)) or 'empty'}).")
    if unknown:
        warnings.warn(f"{source}: ignoring unknown column(s) {', '.join(unknown)}.", LabelSchemaWarning, stacklevel=2)
    return found


def check_eye_side_zero(eye_side_zero: str) -> str:
    if eye_side_zero not in EYE_SIDE_ZERO:
        raise VisionCLIPError(f"eye_side_zero must be right or left, not {eye_side_zero!r}.")
    return eye_side_zero


def to_file_row(labels: dict, caption: str = "", findings=None, generator_version: str | None = None,
                idx: str = "", eye_side_zero: str = "right") -> list:
    """One labels.csv row (LABEL_COLUMNS order) from the engine's label dict."""
    zero = check_eye_side_zero(eye_side_zero)
    flags = {FLAG_TO_FILE.get(k, k): v for k, v in labels.items()}
    dr = int(labels.get("dr_grade", 0) or 0)
    row = {
        **{c: int(flags.get(c, 0) or 0) for c in SYNFUNDUS_COLUMNS[2:] + ["is_cataract"]},
        "dr_grade": dr,
        "eye_side": 0 if labels.get("eye_side", "right") == zero else 1,
        # diabetes: every DR grade and DME presuppose it (a diabetic without retinopathy is not told apart)
        "is_dm": int(bool(dr > 0 or flags.get("is_dme") or flags.get("is_dm"))),
        "quality_grade": labels.get("quality_grade", "good"),
        "caption": caption or "",
        "findings": json.dumps(findings or [], separators=(",", ":")),
        "generator_version": generator_version or LEGACY_GENERATOR_VERSION,
        "idx": idx,
    }
    for c in READABILITY_FLAGS:
        row[FLAG_TO_FILE.get(c, c)] = int(labels.get(c, 1))
    return [row[c] for c in LABEL_COLUMNS]


def labels_to_classes(labels: dict) -> list[str]:
    """Screening class names present in a labels dict (["normal"] when none).

    Reads the engine's flag names and the SynFundus-1M column names alike."""
    labels = {FILE_TO_FLAG.get(k, k): v for k, v in labels.items()}
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


def _eye_side(v, zero: str) -> str:
    side = str(v if v is not None else "").strip().lower()
    if side in ("0", "0.0", "1", "1.0"):
        return zero if side.startswith("0") else ("left" if zero == "right" else "right")
    side_map = {"l": "left", "left": "left", "os": "left", "r": "right", "right": "right", "od": "right", "": "right"}
    if side not in side_map:
        raise VisionCLIPError(f"Bad value {v!r} in column eye_side: expected 0, 1, left or right.")
    return side_map[side]


def normalise_labels(row: dict, eye_side_zero: str = "right") -> dict:
    """Read one labels row (SynFundus-1M columns, older aliases, or the engine's own names) into the
    engine's label dict; raise VisionCLIPError naming a bad value.

    Lenient per row (an absent flag is 0, absent readability 1): whole files are checked for missing
    columns by :func:`check_header`. ``eye_side_zero``: which eye 0 means in a numeric eye_side.
    """
    if not isinstance(row, dict):
        raise VisionCLIPError("A label row must be a mapping of column names to values.")
    zero = check_eye_side_zero(eye_side_zero)
    r = {}
    for k, v in row.items():
        if k is not None:
            r[canonical_column(k)] = v
    out: dict = {}
    if "idx" in r and r["idx"] not in (None, ""):
        out["idx"] = str(r["idx"]).strip()
    out["dr_grade"] = _to_int("dr_grade", r.get("dr_grade"), 0, 4)
    out["eye_side"] = _eye_side(r.get("eye_side"), zero)
    for flag in CONDITION_FLAGS:
        col = FLAG_TO_FILE.get(flag, flag)
        out[flag] = _to_int(col, r.get(col), 0, 1)
    dm = r.get("is_dm")
    derived = int(out["dr_grade"] > 0 or out["is_dme"])
    out["is_dm"] = derived if dm is None or str(dm).strip() == "" else _to_int("is_dm", dm, 0, 1)
    for flag in READABILITY_FLAGS:
        col = FLAG_TO_FILE.get(flag, flag)
        out[flag] = _to_int(col, r.get(col), 0, 1) if r.get(col) not in (None, "") else 1
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
    if r.get("generator_version") not in (None, ""):
        out["generator_version"] = str(r["generator_version"]).strip()
    return out
