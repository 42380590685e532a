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
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override a config key (value parsed as YAML; a.b=v for a nested key; repeatable)")
    p.add_argument("--full", action="store_true",
                   help="save full model files (with the frozen text tower) instead of lean ones")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")


def run(args, callbacks=()) -> int:
    from .distributed import cleanup, init_distributed
    from ..memory import keep_freed_memory
    from .params import load_config, parse_overrides
    from .train import train

    overrides = parse_overrides(args.overrides)
    if args.steps:
        overrides["steps"] = args.steps
    if args.eval_data:
        overrides["eval_data"] = list(args.eval_data)
    if args.full:
        overrides["full_checkpoints"] = True
    cfg = load_config(args.config, overrides)
    out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    env = init_distributed(args.device)
    if env.device.type == "cpu":
        keep_freed_memory()  # activations are freed and re-faulted every step otherwise
    try:
        command = " ".join(["visionclip train --config", str(args.config), *(f"--set {o}" for o in args.overrides)])
        final = train(cfg, out, env, resume=args.resume, config_path=command, callbacks=callbacks)
    finally:
        cleanup()
    if env.is_master:
        print(f"model written to {final}")
    return 0


def main(argv=None, callbacks=()) -> int:
    """``callbacks``: objects with ``on_step_end(trainer, step)`` (see engine.train.train.Trainer)."""
    parser = argparse.ArgumentParser(prog="visionclip train", description="Contrastive pretraining on synthetic data")
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="visionclip: %(message)s")
    try:
        return run(args, callbacks)
    except VisionCLIPError as e:
        print(f"visionclip: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
