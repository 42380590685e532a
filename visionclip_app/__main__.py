"""``python -m visionclip_app`` is the same as ``python launch.py``."""
import sys

from .cli import main

sys.exit(main())
