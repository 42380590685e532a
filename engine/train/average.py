"""Weight averaging of fine-tuned models (model soups, WiSE-FT-style interpolation).

Models fine-tuned from the same initial weights can be averaged tensor by tensor; the average often
keeps what each learned better than either alone does (Wortsman et al. 2022, "Model soups"; "Robust
fine-tuning of zero-shot models"). Here it combines models trained on different synthetic renders.
The averaged file says what it was made from: each part's model id, weight and training data, and the
sum of their real patient images (0 for every model this project trains).

    visionclip average runs/a/best.safetensors assets/model --weights 0.5 0.5 --out runs/soup.safetensors
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from ..checkpoint import checkpoint_file, load_checkpoint, save_checkpoint
from ..errors import VisionCLIPError

# Preprocessing that may differ between the parts; averaged like the weights (it is a colour mean).
AVERAGED_PREPROCESS_KEYS = ("colour_target",)


def normalised_weights(weights: list[float] | None, n: int) -> list[float]:
    if weights is None:
        return [1.0 / n] * n
    if len(weights) != n:
        raise VisionCLIPError(f"{len(weights)} weights for {n} models; give one weight per model")
    if any(not (w >= 0) for w in weights) or sum(weights) <= 0:  # `not >=` also catches NaN
        raise VisionCLIPError(f"weights must be >= 0 with a positive sum, got {weights}")
    total = float(sum(weights))
    return [w / total for w in weights]


def _comparable(config: dict) -> dict:
    """The config without what averaging may combine: the parts must share everything else."""
    pre = {k: v for k, v in config.get("preprocess_cfg", {}).items() if k not in AVERAGED_PREPROCESS_KEYS}
    return {**config, "preprocess_cfg": pre}


def _average_config(configs: list[dict], weights: list[float]) -> dict:
    first = configs[0]
    reference = _comparable(first)
    for i, cfg in enumerate(configs[1:], start=2):
        other = _comparable(cfg)
        if other != reference:
            differing = sorted(k for k in set(other) | set(reference) if other.get(k) != reference.get(k))
            raise VisionCLIPError(f"model {i} has another architecture or preprocessing than model 1 ({', '.join(differing)})")
    pre = dict(first.get("preprocess_cfg", {}))
    for key in AVERAGED_PREPROCESS_KEYS:
        values = [cfg.get("preprocess_cfg", {}).get(key) for cfg in configs]
        if all(v is None for v in values):
            continue
        if any(v is None for v in values):
            raise VisionCLIPError(f"only some models have preprocess_cfg.{key}; they were fed differently")
        pre[key] = [round(sum(w * v[c] for w, v in zip(weights, values)), 4) for c in range(len(values[0]))]
    return {**first, "preprocess_cfg": pre}


def _average_tensors(states: list[dict[str, torch.Tensor]], weights: list[float]) -> dict[str, torch.Tensor]:
    keys = set(states[0])
    for i, state in enumerate(states[1:], start=2):
        if set(state) != keys:
            missing = sorted(keys ^ set(state))
            raise VisionCLIPError(f"model {i} has other tensors than model 1 (e.g. {missing[0]})")
    out = {}
    for name in sorted(keys):
        tensors = [s[name] for s in states]
        if any(t.shape != tensors[0].shape for t in tensors):
            raise VisionCLIPError(f"tensor {name} has different shapes: {[tuple(t.shape) for t in tensors]}")
        # Counters (BatchNorm's num_batches_tracked) are not averaged; tensors all parts share (the
        # frozen text tower) are kept bit for bit, as float rounding would make them differ from
        # their package and the lean file could not be loaded.
        if not tensors[0].is_floating_point() or all(torch.equal(t, tensors[0]) for t in tensors[1:]):
            out[name] = tensors[0].clone()
            continue
        acc = sum(w * t.to(torch.float32) for w, t in zip(weights, tensors))
        out[name] = acc.to(tensors[0].dtype)
    return out


def _average_metadata(metas: list[dict], weights: list[float], selected_by: str, command: str) -> dict:
    initial = [json.dumps(m.get("initial_weights"), sort_keys=True) for m in metas]
    if len(set(initial)) != 1:
        raise VisionCLIPError("the models start from different initial weights; averaging them is meaningless")
    parts = [{"model_id": m.get("model_id"), "weight": round(w, 6), "training_data": m.get("training_data", {})}
             for m, w in zip(metas, weights)]
    sources: list[str] = []
    for m in metas:
        for s in (m.get("training_data") or {}).get("sources", []):
            if s not in sources:
                sources.append(s)
    real = [(m.get("training_data") or {}).get("real_patient_images") for m in metas]
    if any(r is None for r in real):
        raise VisionCLIPError("a model does not record how many real patient images it was trained on")
    return {
        "config_name": metas[0].get("config_name", "model"),
        "initial_weights": metas[0].get("initial_weights"),
        "trained": True,
        "averaged_from": parts,
        "selected_by": selected_by,
        "training_command": command,
        "training_data": {
            "real_patient_images": int(sum(real)),
            "sources": sources,
            "synthetic_images_seen": int(sum((m.get("training_data") or {}).get("synthetic_images_seen", 0) for m in metas)),
            "averaged_models": len(metas),
        },
    }


def average_checkpoints(paths: list[str | Path], weights: list[float] | None = None,
                        selected_by: str = "weights given by the user", command: str = "") -> tuple[dict, dict, dict]:
    """(state_dict, config, metadata) of the weighted average of two or more checkpoints."""
    if len(paths) < 2:
        raise VisionCLIPError("give at least two models to average")
    w = normalised_weights(weights, len(paths))
    loaded = [load_checkpoint(checkpoint_file(p)) for p in paths]
    for p, (_, cfg, _) in zip(paths, loaded):
        if cfg is None:
            raise VisionCLIPError(f"{p} has no embedded model config")
    states, configs, metas = zip(*loaded)
    config = _average_config(list(configs), w)
    state = _average_tensors(list(states), w)
    metadata = _average_metadata(list(metas), w, selected_by, command)
    return state, config, metadata


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("models", nargs="+", metavar="MODEL", help="checkpoints (.safetensors) or model folders, 2 or more")
    p.add_argument("--weights", type=float, nargs="+", default=None, help="one weight per model (normalised to sum 1; default equal)")
    p.add_argument("--out", required=True, metavar="FILE.safetensors")
    p.add_argument("--selected-by", default="weights given by the user",
                   help="how the weights were chosen, recorded in the file (e.g. held-out synthetic accuracy)")


def run(args) -> int:
    out = Path(args.out)
    if out.suffix.lower() != ".safetensors":
        raise VisionCLIPError(f"--out must be a .safetensors file, got {out.name}")
    command = "visionclip average " + " ".join(str(m) for m in args.models)
    if args.weights:
        command += " --weights " + " ".join(f"{w:g}" for w in args.weights)
    state, config, metadata = average_checkpoints(args.models, args.weights, args.selected_by, command)
    model_id = save_checkpoint(out, state, config, metadata, lean=True)
    parts = ", ".join(f"{p['model_id']} x{p['weight']:.3f}" for p in metadata["averaged_from"])
    print(f"{model_id}: {parts} -> {out}")
    return 0
