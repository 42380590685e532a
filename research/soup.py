"""Model soups: held-out synthetic and real figures of weight averages (``visionclip average``).

    python -m research.soup --models assets/model runs/v1v2-masks-800/best.safetensors \
        --weights 0 0.25 0.5 0.75 1 [--eval-root ../shared/eval] [--synthetic-n 220] [--out-best FILE]
    python -m research.soup --greedy --models assets/model runs/*/best.safetensors

Interpolation (two models): weight w means (1 - w) x the first model + w x the second.
Greedy soup (Wortsman et al. 2022): the models in order of their own held-out synthetic score, each
added to the uniform soup only if the soup's score does not fall.
What is kept is chosen on held-out synthetic renders only (the mean balanced accuracy over the
pipelines' benchmarks, seed 2e9 as in `bench/model_card.py`); the real folders are measured, never
used to choose. ``--out-best`` writes the chosen average as a checkpoint.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench.common import EVAL_ROOT
from engine import VisionCLIP, load_preset
from engine.checkpoint import save_checkpoint
from engine.evaluate import embed_folder, evaluate
from engine.memory import keep_freed_memory
from engine.synth.benchmark import HELD_OUT_SEED, write_benchmark
from engine.synth.pipeline import get_pipeline
from engine.train.average import average_checkpoints

REAL = {"eyedisease_dev": ("eyedisease", "eyedisease_grouped"), "palm_dev": ("palm",)}


def averaged(models: list[str], weights: list[float], path: Path) -> VisionCLIP:
    kept = [(m, w) for m, w in zip(models, weights) if w > 0]
    if len(kept) == 1:
        return VisionCLIP.load(kept[0][0])
    command = "visionclip average " + " ".join(m for m, _ in kept) + " --weights " + " ".join(f"{w:g}" for _, w in kept)
    state, config, meta = average_checkpoints([m for m, _ in kept], [w for _, w in kept],
                                              "held-out synthetic balanced accuracy (research/soup.py)", command)
    save_checkpoint(path, state, config, meta, lean=True)
    return VisionCLIP.load(path)


def score(model: VisionCLIP, benches: dict[str, Path], eval_root: Path, real: bool = True) -> dict:
    row = {f"syn {name}": evaluate(model, d, load_preset("screening"))["balanced_accuracy"] for name, d in benches.items()}
    row["syn mean"] = sum(row.values()) / len(row)
    for folder, presets in (REAL.items() if real else ()):
        if not (eval_root / folder / "labels.csv").is_file():
            continue
        embedded = embed_folder(model, eval_root / folder)
        for preset in presets:
            r = evaluate(model, embedded, load_preset(preset))
            row[preset] = r["balanced_accuracy"]
            if preset == "eyedisease":
                cm = r["confusion_matrix"]
                row["recalls"] = "/".join(f"{cm[i][i] / max(1, sum(cm[i])):.2f}" for i in range(len(cm)))
            if preset == "palm":
                row["palm AUC"] = r["mean_auc"]
    return row


def report(name: str, model: VisionCLIP, row: dict) -> dict:
    print(f"{name} {model.model_id}: " + ", ".join(
        f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()), flush=True)
    return row


def greedy(models: list[str], benches: dict, eval_root: Path, tmp: Path) -> tuple[dict, str]:
    alone = {}
    for m in models:
        model = VisionCLIP.load(m)
        alone[m] = report(m, model, score(model, benches, eval_root, real=False))
    order = sorted(models, key=lambda m: -alone[m]["syn mean"])
    soup, best = [order[0]], alone[order[0]]["syn mean"]
    for m in order[1:]:
        trial = soup + [m]
        model = averaged(trial, [1.0] * len(trial), tmp / "soup.safetensors")
        row = report(f"soup of {len(trial)} (+{m})", model, score(model, benches, eval_root, real=False))
        if row["syn mean"] >= best:
            soup, best = trial, row["syn mean"]
    rows = {}
    candidates = {"first alone": [order[0]], "greedy: " + " + ".join(soup): soup, "uniform, all": order}
    for name, members in candidates.items():
        if name != "first alone" and members == [order[0]]:  # the greedy soup kept nothing: same model
            rows[name] = rows["first alone"]
            continue
        model = averaged(members, [1.0] * len(members), tmp / "soup.safetensors")
        rows[name] = report(name, model, score(model, benches, eval_root))
    return rows, "greedy: " + " + ".join(soup)


def chosen_weights(args, best: str) -> tuple[list[str], list[float]]:
    if best.startswith("greedy: "):
        members = best.removeprefix("greedy: ").split(" + ")
        return members, [1.0] * len(members)
    w = float(best.removeprefix("w="))
    return args.models, [1 - w, w]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", required=True, metavar="MODEL")
    ap.add_argument("--greedy", action="store_true", help="greedy soup over all --models instead of interpolating two")
    ap.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    ap.add_argument("--pipelines", nargs="+", default=["v1", "v2"], help="renderer pipelines of the held-out benchmarks")
    ap.add_argument("--synthetic-n", type=int, default=220)
    ap.add_argument("--eval-root", default=str(EVAL_ROOT))
    ap.add_argument("--out-best", default=None, metavar="FILE.safetensors")
    args = ap.parse_args()
    keep_freed_memory()
    size = VisionCLIP.load(args.models[0]).image_size
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        conditions = list(get_pipeline("v1").conditions)  # the 11 classes of the screening prompts
        benches = {p: write_benchmark(Path(tmp) / f"syn_{p}", args.synthetic_n, HELD_OUT_SEED, size, conditions, pipeline=p)
                   for p in args.pipelines}
        if args.greedy:
            rows, best = greedy(args.models, benches, Path(args.eval_root), Path(tmp))
        else:
            if len(args.models) != 2:
                raise SystemExit("interpolation takes two --models (or pass --greedy)")
            for w in args.weights:
                model = averaged(args.models, [1 - w, w], Path(tmp) / "soup.safetensors")
                rows[f"w={w:g}"] = report(f"w={w:g}", model, score(model, benches, Path(args.eval_root)))
            best = max(rows, key=lambda k: rows[k]["syn mean"])
    print(f"\nchosen on held-out synthetic (mean over {', '.join(args.pipelines)}): {best}")
    keys = list(rows[best])
    print("\n| soup | " + " | ".join(keys) + " |\n|---|" + "---|" * len(keys))
    for name, row in rows.items():
        print(f"| {name} | " + " | ".join(f"{row[k]:.3f}" if isinstance(row[k], float) else str(row[k]) for k in keys) + " |")
    if args.out_best:
        model = averaged(*chosen_weights(args, best), Path(args.out_best))
        print(f"\nwrote {model.model_id} to {args.out_best}")


if __name__ == "__main__":
    main()
