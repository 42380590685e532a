"""`python -m research COMMAND ...`: the `visionclip` command with the trial pipelines registered, so
that `synth --pipeline v2-appearance` and trial configs naming a trial `val_pipeline` run as they did."""
import sys

import research  # noqa: F401  (registers the trial renderer pipelines)
from engine.cli import main

if __name__ == "__main__":
    sys.exit(main())
