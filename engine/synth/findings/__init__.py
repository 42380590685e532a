"""Finding layers, one module per finding or condition family."""
from engine.synth.findings import composite, dr, glaucoma, macula, myopia, vascular  # noqa: F401  (registers)
