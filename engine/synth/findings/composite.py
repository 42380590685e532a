"""Composite the lesion maps (haemorrhage, exudate, white, pigment) into the image, once."""
from __future__ import annotations

from engine.synth.layer import Layer, register


@register
class LesionComposite(Layer):
    name = "lesion_composite"
    params = {"exudate_tint": (0.9, 1.05)}

    def draw(self, eye, canvas, rng):
        canvas.composite_lesions(rng, self.p["exudate_tint"])
