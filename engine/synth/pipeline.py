"""Named rendering pipelines: an ordered list of layer names with parameter overrides, plus the
case sampler's options. The library names the two renderers users choose between (v1, the shipped
model's, and v2); a variant is a Pipeline derived from them (``with_params``, ``with_layer``) and, to be
chosen by name (``--pipeline``, ``val_pipeline``), added with ``register_pipeline``."""
from __future__ import annotations

from dataclasses import dataclass, field

from engine.errors import VisionCLIPError
from engine.synth import anatomy, camera, findings, randomisation  # noqa: F401  (import registers every layer)
from engine.synth.case import CaseOptions
from engine.synth.layer import LAYERS, Layer
from engine.synth.schema import CONDITIONS

GENERATOR_MAJOR = "2.0"


@dataclass
class Pipeline:
    name: str
    layers: list                                   # [name | (name, {param: value})]
    case: CaseOptions = field(default_factory=CaseOptions)

    @property
    def version(self) -> str:
        return f"{GENERATOR_MAJOR}-{self.name}"

    @property
    def conditions(self) -> list[str]:
        """The condition keys this pipeline's cases are drawn from, in CONDITIONS order (DR brings DME)."""
        return [c for c in CONDITIONS if c in ("normal", "dr", "dme") or c in self.case.other]

    @property
    def layer_names(self) -> list[str]:
        return [e if isinstance(e, str) else e[0] for e in self.layers]

    def layer_params(self, layer: str) -> dict:
        """The parameter overrides this pipeline gives one layer (empty when it keeps the defaults)."""
        if layer not in self.layer_names:
            raise VisionCLIPError(f"Pipeline {self.name!r} has no layer {layer!r} to set parameters of.")
        entry = self.layers[self.layer_names.index(layer)]
        return {} if isinstance(entry, str) else dict(entry[1])

    def build(self) -> list[Layer]:
        out = []
        for entry in self.layers:
            name, overrides = (entry, {}) if isinstance(entry, str) else entry
            if name not in LAYERS:
                raise VisionCLIPError(f"Unknown layer {name!r} in pipeline {self.name!r}; known: {', '.join(sorted(LAYERS))}.")
            out.append(LAYERS[name](**overrides))
        return out

    def without(self, *names: str) -> "Pipeline":
        """A copy without some layers (experiments, tests of layer independence)."""
        keep = [e for e, name in zip(self.layers, self.layer_names) if name not in names]
        return Pipeline(f"{self.name}-without-{'-'.join(names)}", keep, self.case)

    def with_params(self, layer: str, params: dict, name: str) -> "Pipeline":
        """A copy with some of one layer's parameters overridden (on top of this pipeline's own)."""
        old = self.layer_params(layer)  # one-line error for a layer the pipeline lacks
        i = self.layer_names.index(layer)
        return Pipeline(name, self.layers[:i] + [(layer, {**old, **params})] + self.layers[i + 1:], self.case)

    def with_layer(self, entry, before: str, name: str) -> "Pipeline":
        """A copy with one more layer (a name or (name, overrides)) inserted before layer ``before``."""
        names = self.layer_names
        if before not in names:
            raise VisionCLIPError(f"Pipeline {self.name!r} has no layer {before!r} to insert before.")
        i = names.index(before)
        return Pipeline(name, self.layers[:i] + [entry] + self.layers[i:], self.case)


_ANATOMY = ["background", "choroid", "nerve_fibres", "disc", "vessels", "hypertensive_vessels", "vessel_composite"]
_FINDINGS = ["microaneurysms", "dot_blot_haemorrhages", "flame_haemorrhages", "hard_exudates", "cotton_wool_spots",
             "severe_npdr", "proliferative_dr", "laser_scars", "macular_oedema", "amd", "myopic_maculopathy",
             "hypertensive_lesions", "vein_occlusion", "epiretinal_membrane"]
_CAMERA = ["illumination", "flare", "media_opacity", "defocus", "eyelash", "dust", "tone", "sensor", "field_edge", "jpeg"]

V1 = Pipeline("v1", _ANATOMY + _FINDINGS + ["csc", "lesion_composite"] + _CAMERA)


def _v2() -> Pipeline:
    """Realism where the diagnosis lives: normal discs vary and glaucoma is told by the cup's shape and
    rim, not brightness; early DR faint and small; CSC; choroidal texture."""
    over = {
        "disc": {"size": (0.7, 1.0), "rim_colours": ((1.0, 0.6, 0.48), (1.0, 0.84, 0.5)), "rim_brightness": (0.85, 1.12),
                 "ecc": (0.82, 0.98), "cup_alpha": (0.4, 0.85), "glaucoma_cup_alpha": (0.4, 0.85),
                 "glaucoma_cup_offset": 0.08, "glaucoma_cup_width": (0.72, 0.92), "glaucoma_cup_drop": (0.03, 0.14),
                 "normal_cup_width": (0.95, 1.15), "p_ppa_normal": 0.15, "p_ppa_glaucoma": 0.45,
                 "margin_soft": (0.06, 0.16), "cup_soft": (0.12, 0.3), "glaucoma_cup_soft": (0.04, 0.1), "glow": (0.05, 0.3)},
        "microaneurysms": {"counts": {1: (1, 6), 2: (5, 15), 3: (12, 28), 4: (8, 25)}, "radius": 0.0045,
                           "early_contrast": (0.3, 0.8)},
        "dot_blot_haemorrhages": {"early_contrast": (0.35, 0.9), "radius": 0.011},
        "flame_haemorrhages": {"early_contrast": (0.35, 0.9)},
        "hard_exudates": {"early_contrast": (0.45, 1.0), "p_ring": 0.35},
        "choroid": {"texture": 0.12, "faint_scale": 4},
        "background": {"macula_dark": (0.15, 0.32)},
        "vessel_composite": {"reflex": (0.08, 0.22)},
    }
    layers = []
    for name in _ANATOMY + _FINDINGS + ["csc", "lesion_composite", "glaucoma_signs"] + _CAMERA:
        layers.append((name, over[name]) if name in over else name)
    base = CaseOptions()
    case = CaseOptions(other=base.other + ("csc",), other_p=base.other_p + (0.05,),  # SynFundus-1M has CSC
                       normal_cdr=(0.05, 0.6), glaucoma_cdr=(0.65, 0.9),
                       dr_grade_p=(0.45, 0.35, 0.12, 0.08))  # screening DR is mostly mild to moderate
    return Pipeline("v2", layers, case)


PIPELINES: dict[str, Pipeline] = {"v1": V1, "v2": _v2()}
DEFAULT_PIPELINE = "v1"  # the shipped model was trained on v1 renders


def register_pipeline(pipeline: Pipeline) -> Pipeline:
    """Make a pipeline choosable by its name; a name already taken by another pipeline is an error."""
    known = PIPELINES.get(pipeline.name)
    if known is not None and known is not pipeline:
        raise VisionCLIPError(f"A renderer pipeline named {pipeline.name!r} is already registered.")
    PIPELINES[pipeline.name] = pipeline
    return pipeline


def get_pipeline(pipeline) -> Pipeline:
    """A Pipeline from a name, a Pipeline, or a list of layer names (a custom pipeline)."""
    if pipeline is None:
        return PIPELINES[DEFAULT_PIPELINE]
    if isinstance(pipeline, Pipeline):
        return pipeline
    if isinstance(pipeline, str):
        if pipeline not in PIPELINES:
            raise VisionCLIPError(f"Unknown renderer pipeline {pipeline!r}; choose from {', '.join(PIPELINES)}.")
        return PIPELINES[pipeline]
    if isinstance(pipeline, (list, tuple)):
        return Pipeline("custom", list(pipeline))
    raise VisionCLIPError(f"Pipeline must be a name or a list of layer names, got {pipeline!r}.")
