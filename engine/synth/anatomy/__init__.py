"""Anatomy layers: background and choroid, nerve fibres, optic disc and cup, vessel tree."""
from engine.synth.anatomy import background, disc, normal_variants, vessels  # noqa: F401  (registers the layers)
