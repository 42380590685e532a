"""``visionclip train`` and ``torchrun -m engine.train.main``: a thin layer over engine.train.train."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..errors import VisionCLIPError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, metavar="FILE", help="training config (YAML or JSON)")
    p.add_argument("--out", default=None, metavar="RUN_DIR", help="run folder (default: runs/<config name>)")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's latest checkpoint")
    p.add_argument("--eval-data", action="append", default=[], metavar="DIR",
                   help="real labelled folder to evaluate on during training (evaluation only; repeatable)")
    p.add_argument("--steps", type=int, default=None, help="override the config's number of steps")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")


def run(args) -> int:
    from .distributed import cleanup, init_distributed
    from ..memory import keep_freed_memory
    from .params import load_config
    from .train import train

    overrides = {"steps": args.steps} if args.steps else {}
    if args.eval_data:
        overrides["eval_data"] = list(args.eval_data)
    cfg = load_config(args.config, overrides)
    out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    env = init_distributed(args.device)
    if env.device.type == "cpu":
        keep_freed_memory()  # activations are freed and re-faulted every step otherwise
    try:
        final = train(cfg, out, env, resume=args.resume, config_path=f"visionclip train --config {args.config}")
    finally:
        cleanup()
    if env.is_master:
        print(f"model written to {final}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="visionclip train", description="Contrastive pretraining on synthetic data")
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="visionclip: %(message)s")
    try:
        return run(args)
    except VisionCLIPError as e:
        print(f"visionclip: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
