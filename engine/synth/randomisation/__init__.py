"""Domain-randomisation layers: appearance drawn far beyond realism so that training reads shape, not style."""
from engine.synth.randomisation import appearance  # noqa: F401  (registers the layers)
