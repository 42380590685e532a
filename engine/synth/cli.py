"""`visionclip synth` sub-command: arguments and runner."""
from __future__ import annotations

import argparse

from engine.errors import VisionCLIPError
from engine.synth.pipeline import DEFAULT_PIPELINE, PIPELINES
from engine.synth.schema import CONDITIONS
from engine.synth.writer import generate_dataset


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (must not exist or be empty)")
    parser.add_argument("--n", required=True, type=int, metavar="N", help="number of images")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    parser.add_argument("--size", type=int, default=512, help="image side in pixels (default 512)")
    parser.add_argument("--workers", type=int, default=1, metavar="K", help="parallel processes (default 1)")
    parser.add_argument("--conditions", nargs="+", default=None, metavar="COND",
                        help=f"force conditions: {', '.join(CONDITIONS)}, dr0..dr4 (default: realistic mix)")
    parser.add_argument("--pipeline", default=None, choices=sorted(PIPELINES),
                        help=f"renderer pipeline (default {DEFAULT_PIPELINE}, the one the shipped model was trained on)")
    parser.add_argument("--benchmark", action="store_true",
                        help="write a labelled evaluation set instead (labels.csv path,label; one condition per "
                             "image, cycling over --conditions or all), readable by `visionclip eval`")


def run(args) -> int:
    conds = None
    if args.conditions:
        conds = [c for a in args.conditions for c in a.split(",") if c.strip()]
    if args.benchmark:
        from engine.synth.benchmark import write_benchmark
        from tqdm import tqdm

        if args.n < 1 or not 64 <= args.size <= 4096:
            raise VisionCLIPError("--n must be at least 1 and --size between 64 and 4096")
        with tqdm(total=args.n, desc="benchmark", unit="img") as bar:
            out = write_benchmark(args.out, args.n, seed=args.seed, size=args.size, conditions=conds,
                                  progress=lambda done, total: bar.update(done - bar.n),
                                  pipeline=getattr(args, "pipeline", None))
        print(f"Wrote a labelled synthetic benchmark of {args.n} images to {out}")
        return 0
    out = generate_dataset(args.out, args.n, seed=args.seed, size=args.size, workers=args.workers,
                           conditions=conds, progress=True, pipeline=getattr(args, "pipeline", None))
    print(f"Wrote {args.n} synthetic fundus images to {out}")
    return 0
