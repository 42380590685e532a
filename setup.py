"""Build hook (everything else is in pyproject.toml): ship the repository's assets/ (prompt presets,
the default model and its card, example photographs) inside the engine package as engine/_assets/,
so that an installed wheel finds them through importlib.resources (engine/resources.py). An
editable install reads the checkout's assets/ instead."""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SHIPPED_ASSETS = {
    "prompts": ["*.json"],
    "model": ["*.safetensors", "MODEL_CARD.md", "training_config.json"],
    "examples": ["*.png", "captions.json"],
}


class BuildPyWithAssets(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        root = Path(__file__).resolve().parent / "assets"
        for folder, patterns in SHIPPED_ASSETS.items():
            dest = Path(self.build_lib) / "engine" / "_assets" / folder
            dest.mkdir(parents=True, exist_ok=True)
            for pattern in patterns:
                for src in sorted((root / folder).glob(pattern)):
                    shutil.copy2(src, dest / src.name)


setup(cmdclass={"build_py": BuildPyWithAssets})
