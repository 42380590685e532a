"""Where do real healthy eyes' P(abnormal) go? The screening softmax of each folder's healthy eyes, by class.

    python -m research.healthy_mass [--model assets/model] [--prompts screening] [--eval-root ../shared/eval]

A diagnostic on the real evaluation folders (evaluation only: nothing is fitted to them). With the
prompt set's screening rule, P(abnormal) is 1 - P(normal) in a softmax over normal and the conditions
that count (engine.screening). For the healthy eyes of every folder that has them, this prints the mean
P(normal) and the mean share of each counted condition: one condition taking most of the mass would
be a sink; mass spread over all of them is a shift of real healthy eyes as a whole.
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import torch

from bench.common import EVAL_ROOT

MIN_HEALTHY = 10  # as bench.screening: fewer healthy eyes than this say little


def healthy_shares(model, prompt_set, folder: Path) -> dict[str, float] | None:
    """{"normal": mean P(normal), condition: mean share, ...} over the folder's healthy eyes, or None
    when it has fewer than MIN_HEALTHY."""
    rows = list(csv.DictReader((folder / "labels.csv").open(encoding="utf-8")))
    healthy = [folder / r["path"] for r in rows if r["label"] == prompt_set.screening.normal]
    if len(healthy) < MIN_HEALTHY:
        return None
    probs = model.probabilities(model.encode_images(healthy), prompt_set)
    counted = [c for c in prompt_set.classes if c != prompt_set.screening.normal and c not in prompt_set.screening.excluded]
    columns = [prompt_set.classes.index(c) for c in [prompt_set.screening.normal, *counted]]
    sub = probs[:, columns]
    sub = sub / sub.sum(dim=1, keepdim=True)
    means = sub.mean(dim=0)
    return {name: float(v) for name, v in zip([prompt_set.screening.normal, *counted], means)}


def main(argv=None) -> None:
    from engine import VisionCLIP
    from engine.prompts import load_prompt_set

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--prompts", default=None, help="prompt set (default: the screening preset)")
    ap.add_argument("--eval-root", default=str(EVAL_ROOT))
    args = ap.parse_args(argv)
    model = VisionCLIP.load(args.model)
    prompt_set = load_prompt_set(args.prompts)
    if prompt_set.screening is None:
        raise SystemExit("the prompt set has no screening rule")
    with torch.inference_mode():
        for folder in sorted(p for p in Path(args.eval_root).iterdir() if (p / "labels.csv").exists()):
            shares = healthy_shares(model, prompt_set, folder)
            if shares is None:
                continue
            normal = shares.pop(prompt_set.screening.normal)
            ranked = ", ".join(f"{c} {v:.3f}" for c, v in sorted(shares.items(), key=lambda kv: -kv[1]))
            print(f"{folder.name}: healthy eyes' mean P(normal) {normal:.3f}; the rest by condition: {ranked}")


if __name__ == "__main__":
    main()
