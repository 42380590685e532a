"""Camera and media layers: illumination, flare, media opacity, defocus, artefacts, tone, sensor."""
from engine.synth.camera import artefacts, optics  # noqa: F401  (registers the layers)
