"""VisionCLIP engine: a CLIP-style retina model trained on synthetic fundus photographs."""
__version__ = "0.1.0"
