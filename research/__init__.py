"""The research record: trial configs, trial renderer pipelines, one-off experiment scripts and the
trial log. Not part of the product; see research/README.md. Importing it registers the trial pipelines."""
from research import pipelines  # noqa: F401  (registers the trial renderer pipelines)
