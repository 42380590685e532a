"""The screening decision: normal versus any finding, asked as its own question before "which condition".

A prompt set with a ``normal`` class answers two questions. First *is there a finding?*: P(abnormal)
is one minus the probability of ``normal`` in a softmax over ``normal`` and the conditions that count
towards the decision; a photograph is a finding when P(abnormal) reaches the rule's threshold. Only
then *which condition?*: the most probable class other than ``normal`` over all the set's classes.

A rule may leave conditions out of the decision. They keep their probabilities and can still be named
as the finding, but do not alone make a photograph abnormal: on the shipped model the glaucoma, optic
atrophy, hypertensive retinopathy and epiretinal membrane prompts fire on healthy real discs and vessels
(see the model card), so counting them called most healthy eyes diseased.

The threshold belongs to one model: it is fixed on synthetic renders (:func:`calibrate_threshold`)
and stored per model id. Under a model without a calibrated threshold, or a set without a rule, the
decision falls back to top-1 (a finding when ``normal`` is not the most probable class).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import torch

from .errors import VisionCLIPError

NORMAL = "normal"
FINDING = "finding"
CALIBRATION_SPECIFICITY = 0.80  # share of healthy synthetic renders a calibrated threshold calls normal
CALIBRATION_SEED = 1_500_000_000  # apart from training seeds (small) and the held-out benchmark's (2e9)
CALIBRATION_IMAGES = 400


@dataclass(frozen=True)
class ScreeningRule:
    """How a prompt set screens: its normal class, the classes left out of the decision, and the
    decision threshold on P(abnormal) per model id (calibrated on synthetic renders)."""

    normal: str = NORMAL
    excluded: tuple[str, ...] = ()
    thresholds: Mapping[str, float] = field(default_factory=dict)
    calibration: str = ""  # how the thresholds were fixed, for the record

    @classmethod
    def from_dict(cls, doc) -> "ScreeningRule":
        if not isinstance(doc, Mapping):
            raise VisionCLIPError("prompt set 'screening' must be an object with 'normal', 'exclude' and 'thresholds'")
        excluded = doc.get("exclude", [])
        thresholds = doc.get("thresholds", {})
        if not isinstance(excluded, list) or not all(isinstance(c, str) for c in excluded):
            raise VisionCLIPError("prompt set 'screening.exclude' must be a list of class names")
        if not isinstance(thresholds, Mapping):
            raise VisionCLIPError("prompt set 'screening.thresholds' must map model ids to numbers")
        for model_id, value in thresholds.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
                raise VisionCLIPError(f"prompt set 'screening.thresholds' for {model_id}: {value!r} is not a "
                                      "probability between 0 and 1")
        normal = doc.get("normal", NORMAL)
        if not isinstance(normal, str) or not normal.strip():
            raise VisionCLIPError("prompt set 'screening.normal' must name the normal class")
        return cls(normal.strip(), tuple(excluded), {str(k): float(v) for k, v in thresholds.items()},
                   str(doc.get("calibration", "")))

    def to_dict(self) -> dict:
        doc = {"normal": self.normal, "exclude": list(self.excluded), "thresholds": dict(self.thresholds)}
        if self.calibration:
            doc["calibration"] = self.calibration
        return doc

    def with_threshold(self, model_id: str, value: float, calibration: str = "") -> "ScreeningRule":
        return ScreeningRule(self.normal, self.excluded, {**self.thresholds, model_id: float(value)},
                             calibration or self.calibration)

    def check(self, classes: list[str]) -> None:
        """A rule must name classes of its set; a typo would silently change the decision."""
        lowered = {c.lower() for c in classes}
        unknown = [c for c in (self.normal, *self.excluded) if c.lower() not in lowered]
        if unknown:
            raise VisionCLIPError(f"prompt set 'screening' names classes the set lacks: {', '.join(unknown)}")
        if self.normal.lower() in {c.lower() for c in self.excluded}:
            raise VisionCLIPError("prompt set 'screening' cannot exclude its own normal class")


@dataclass
class Screening:
    """The decision for N photographs: P(abnormal), finding or not, and the threshold used (None: top-1)."""

    p_abnormal: np.ndarray
    finding: np.ndarray
    threshold: float | None
    normal: str  # the set's normal class, as the set spells it

    def decision(self, i: int) -> str:
        return FINDING if self.finding[i] else NORMAL


def rule_of(prompt_set) -> ScreeningRule | None:
    """The set's own rule; a set with a class named 'normal' and no rule screens with all its classes."""
    if prompt_set.screening is not None:
        return prompt_set.screening
    normal = prompt_set.class_lookup(NORMAL)
    return ScreeningRule(normal) if normal and len(prompt_set) > 1 else None


def decision_set(prompt_set, rule: ScreeningRule):
    """The prompt set the decision's softmax runs over: normal and the classes that count."""
    excluded = {c.lower() for c in rule.excluded}
    kept = [c for c in prompt_set.classes if c.lower() not in excluded]
    if len(kept) < 2:  # every condition excluded: nothing left to decide with, so all classes count
        return prompt_set
    return prompt_set.subset(kept)


def screen(model, image_embeddings: torch.Tensor, prompt_set, class_probs: torch.Tensor | None = None) -> Screening | None:
    """The screening decision for (N, D) image embeddings, or None for a set without a normal class.
    ``class_probs`` (N, C), when given, are the set's probabilities, used for the top-1 fallback."""
    rule = rule_of(prompt_set)
    if rule is None:
        return None
    decide = decision_set(prompt_set, rule)
    normal = prompt_set.class_lookup(rule.normal)
    p_abnormal = 1 - model.probabilities(image_embeddings, decide)[:, decide.classes.index(normal)].numpy()
    # a threshold holds for the decision it was calibrated on, not for the fallback of a set without conditions
    threshold = rule.thresholds.get(model.model_id) if len(decide) < len(prompt_set) or not rule.excluded else None
    if threshold is None:  # not calibrated for this model: top-1 over the whole set
        if class_probs is None:
            class_probs = model.probabilities(image_embeddings, prompt_set)
        normal_index = prompt_set.classes.index(normal)
        finding = class_probs.argmax(1).numpy() != normal_index
    else:
        finding = p_abnormal >= threshold
    return Screening(p_abnormal.astype(np.float64), np.asarray(finding, dtype=bool), threshold, normal)


def hierarchical_prediction(class_probs: np.ndarray, classes: list[str], screening: Screening | None) -> list[str]:
    """Per photograph, 'normal' when screened normal, else the most probable other class; plain top-1
    without a screening decision."""
    probs = np.asarray(class_probs)
    if screening is None:
        return [classes[i] for i in probs.argmax(1)]
    normal_index = classes.index(screening.normal)
    others = probs.copy()
    others[:, normal_index] = -np.inf
    return [classes[normal_index] if not f else classes[i] for f, i in zip(screening.finding, others.argmax(1))]


def calibrate_threshold(p_abnormal_healthy: np.ndarray, specificity: float = CALIBRATION_SPECIFICITY) -> float:
    """The threshold on P(abnormal) that calls ``specificity`` of healthy photographs normal: fixed on
    healthy synthetic renders, never on real photographs. Real photographs sit further from the
    renders than the renders' conditions sit from each other, so an operating point fixed on diseased
    renders (where the model is sure) would miss most real findings; healthy renders bound it instead."""
    p = np.asarray(p_abnormal_healthy, dtype=np.float64)
    if p.size == 0:
        raise VisionCLIPError("calibration needs healthy images")
    if not 0 < specificity < 1:
        raise VisionCLIPError(f"calibration specificity must lie between 0 and 1, not {specificity}")
    return float(np.quantile(p, specificity))


def calibrate(model, prompt_set, n: int = CALIBRATION_IMAGES, seed: int = CALIBRATION_SEED,
              specificity: float = CALIBRATION_SPECIFICITY, batch_size: int = 32):
    """The prompt set with its rule's threshold for ``model`` fixed on ``n`` healthy synthetic renders
    (drawn at the model's input size from ``seed`` on) by :func:`calibrate_threshold`."""
    from .synth.benchmark import benchmark_samples  # the generator is only needed here

    rule = rule_of(prompt_set)
    if rule is None:
        raise VisionCLIPError("the prompt set has no 'normal' class to screen against")
    images = [image for image, _ in benchmark_samples(n, seed, model.image_size, conditions=["normal"])]
    healthy = screen(model, model.encode_images(images, batch_size=batch_size), prompt_set)
    threshold = calibrate_threshold(healthy.p_abnormal, specificity)
    note = (f"{specificity:.0%} of {n} healthy synthetic renders (seeds from {seed}, {model.image_size} px) "
            "called normal; no real photograph used")
    threshold = min(max(round(threshold, 4), 1e-4), 1 - 1e-4)  # a rule's threshold lies strictly inside (0, 1)
    return prompt_set.with_screening(rule.with_threshold(model.model_id, threshold, note))
