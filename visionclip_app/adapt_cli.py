"""``python -m visionclip_app adapt --cases DB``: a few-shot adapter from the app's reviewed cases.

The app owns its case log: it reads the agreed or corrected, gradable cases (:func:`store.read_reviewed_cases`)
and hands their images and labels to the engine's `visionclip adapt` (same options; ``--data DIR`` works too).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.adapt import cli as engine_adapt
from engine.errors import VisionCLIPError

from .store import read_reviewed_cases


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m visionclip_app adapt",
                                description="Fit a few-shot adapter on the app's reviewed cases or a labelled folder.")
    sources = engine_adapt.add_arguments(p, case_log_option=False)
    sources.add_argument("--cases", metavar="DB",
                         help="the app's case log (visionclip_cases.db): agreed or corrected, gradable cases")
    p.add_argument("--reviewer", default=None, metavar="NAME", help="with --cases: only this reviewer's reviews")
    return p


def read_case_examples(args):
    """(images, labels, provenance, note) of --cases: the case log's reviewed cases, read-only."""
    if not args.cases:
        return engine_adapt.read_folder_examples(args)
    cases = read_reviewed_cases(args.cases, args.reviewer)
    images = [c.image for c in cases]
    provenance = {"source": "cases", "database": Path(args.cases).name, "case_ids": [c.case_id for c in cases]}
    if args.reviewer:
        provenance["reviewer"] = args.reviewer
    return images, [c.label for c in cases], provenance, engine_adapt.thumbnail_note(images)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(engine_adapt.run(args, read_case_examples) or 0)
    except VisionCLIPError as e:
        print(f"visionclip: error: {e}", file=sys.stderr)
        return 2
