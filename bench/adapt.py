"""k-shot curves of the few-shot adapters.

    python -m bench.adapt [--draws 10] [--shots 1 2 4 8 16 all] [--json data/adapt_bench.json]

On eyedisease_dev (prompt set eyedisease_grouped) and palm_dev (palm), per draw: a stratified half of
the folder is the pool the support images are drawn from (k per class, or the whole half for "all"),
the other half is scored; balanced accuracy, mean and spread over the draws. The images are encoded
once with the default model and cached in data/adapt_cache/ (bench/adapt_cache.py --trunk: the embeddings
and the pooled features of the tower's blocks 4 and 5, which clap-stage reads). This use of
eval photographs (fit on one half, score the other, inside a benchmark) is the exception named in
../shared/eval/README.md; no adapter fitted here is kept.

Also the time to fit each adapter on 100 cases. (Label-free transductive calibration, measured here
before, left the product: research/transductive.py.)
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from bench.adapt_cache import DEFAULT_FOLDERS, load_or_encode_trunk
from bench.common import best_of
from engine import VisionCLIP, load_preset
from engine.adapt import TextAnchor, make_head

PROMPTS = {"eyedisease_dev": "eyedisease_grouped", "palm_dev": "palm"}
METHODS = ("zero-shot", "linear-probe", "blend", "clap", "clap-stage")


def balanced_accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    return float(np.mean([(pred[y == c] == c).mean() for c in np.unique(y)]))


def split_halves(y: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
    pool, test = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        pool.append(idx[: len(idx) // 2])
        test.append(idx[len(idx) // 2:])
    return np.concatenate(pool), np.concatenate(test)


def draw_support(y: np.ndarray, pool: np.ndarray, k, rng) -> np.ndarray:
    if k == "all":
        return pool
    return np.concatenate([rng.choice(pool[y[pool] == c], size=min(k, int((y[pool] == c).sum())), replace=False)
                           for c in np.unique(y)])


def fit_predict(method: str, x, y: np.ndarray, support: np.ndarray, test: np.ndarray, anchor, **params):
    """``x``: one tensor, or {image_features: tensor} (clap-stage reads [embedding | stage4 | stage5] by default)."""
    head = make_head(method, **params)
    x = x[head.image_features] if isinstance(x, dict) else x
    head.fit(x[support], y[support], anchor)
    return head.predict_proba(x[test])


def kshot_curves(x, y, anchor, shots, draws, methods, params) -> dict:
    out = {m: {str(k): [] for k in shots} for m in methods}
    for r in range(draws):
        rng = np.random.default_rng(r)
        pool, test = split_halves(y, rng)
        for k in shots:
            support = draw_support(y, pool, k, rng)
            for m in methods:
                probs = fit_predict(m, x, y, support, test, anchor, **params.get(m, {}))
                out[m][str(k)].append(balanced_accuracy(y[test], probs.argmax(1).numpy()))
    return out


def paired_gains(raw: dict, method: str, against: str) -> dict:
    """Per k: mean and sd over the draws of (method - against) on the same draw, and how many draws it won."""
    out = {}
    for k in raw.get(method, {}):
        d = np.array(raw[method][k]) - np.array(raw[against][k])
        out[k] = {"mean": float(d.mean()), "sd": float(d.std()), "wins": int((d > 0).sum()), "draws": len(d)}
    return out


def fit_times(x, y, anchor, n: int = 100, repeats: int = 3) -> dict:
    rng = np.random.default_rng(0)
    idx = np.concatenate([rng.choice(np.flatnonzero(y == c), size=n // len(np.unique(y)), replace=True) for c in np.unique(y)])
    out = {}
    for m in METHODS:
        def fit(m=m):
            head = make_head(m)
            head.fit((x[head.image_features] if isinstance(x, dict) else x)[idx], y[idx], anchor)
        out[m] = best_of(fit, repeats)
    return out


def summarise(curves: dict) -> dict:
    return {m: {k: {"mean": float(np.mean(v)), "sd": float(np.std(v)), "min": float(np.min(v))} for k, v in ks.items()}
            for m, ks in curves.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draws", type=int, default=10)
    ap.add_argument("--shots", nargs="+", default=["1", "2", "4", "8", "16", "all"])
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--data", nargs="+", type=Path, default=DEFAULT_FOLDERS)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--params", default="{}", help='JSON settings per method, e.g. {"clap": {"strength": 2}}')
    ap.add_argument("--json", type=Path, default=None, help="also write every figure here")
    args = ap.parse_args()
    shots = [k if k == "all" else int(k) for k in args.shots]
    params = json.loads(args.params)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model = VisionCLIP.load()
    report = {"model_id": model.model_id, "draws": args.draws, "params": params, "folders": {}}
    for folder in args.data:
        cached = load_or_encode_trunk(model, folder)  # embeddings and mid-level stage features, one pass
        prompt_set = load_preset(PROMPTS.get(folder.name, "screening"))
        classes = [prompt_set.class_lookup(label) for label in cached["labels"]]
        prompt_set = prompt_set.subset(set(classes))
        y = np.array([prompt_set.classes.index(c) for c in classes])
        x = torch.as_tensor(cached["embeddings"]).float()
        features = {"embedding": x}  # every row layout a clap-stage head may read, from the cached stages
        for stages in (("stage5",), ("stage4",), ("stage4", "stage5")):
            features["+".join(("embedding", *stages))] = torch.cat([x, *(torch.as_tensor(cached[s]).float() for s in stages)], 1)
        anchor = TextAnchor.from_model(model, prompt_set)
        raw = kshot_curves(features, y, anchor, shots, args.draws, args.methods, params)
        curves = summarise(raw)
        entry = {"prompts": prompt_set.name, "n": len(y), "curves": curves}
        print(f"\n## {folder.name} (n={len(y)}, prompts {prompt_set.name}); balanced accuracy on the scored half, "
              f"mean ± sd (min) over {args.draws} draws")
        print("| method | " + " | ".join(f"k={k}" for k in shots) + " |")
        print("|---|" + "---|" * len(shots))
        for m, ks in curves.items():
            print(f"| {m} | " + " | ".join(f"{v['mean']:.3f} ± {v['sd']:.3f} ({v['min']:.3f})" for v in ks.values()) + " |")
        for m, against in (("clap-stage", "clap"), ("clap-stage", "zero-shot")):
            if m in raw and against in raw:
                entry[f"{m} - {against}"] = gains = paired_gains(raw, m, against)
                print(f"\npaired {m} - {against}, same draws: "
                      + ", ".join(f"k={k} {g['mean']:+.3f} ± {g['sd']:.3f} ({g['wins']}/{g['draws']} won)" for k, g in gains.items()))
        entry["fit_seconds_100_cases"] = fit_times(features, y, anchor)
        print("\nfit time, 100 cases (best of 3, shared CPU): "
              + ", ".join(f"{m} {s:.3f} s" for m, s in entry["fit_seconds_100_cases"].items()))
        report["folders"][folder.name] = entry
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
