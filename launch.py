#!/usr/bin/env python
"""Start the VisionCLIP app: ``python launch.py`` then open http://127.0.0.1:7860 (see --help)."""
import sys

from visionclip_app.cli import main

if __name__ == "__main__":
    sys.exit(main())
