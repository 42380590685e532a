"""Saliency faithfulness and speed on synthetic fundus photographs with lesion masks.

    python bench/saliency.py [--model PATH] [--n 20] [--conditions dr amd glaucoma pathologic_myopia]

Per condition: pointing game (strict and with a tolerance), energy ratio in the condition's lesion
masks (1.0 = uniform) beside its ceiling on the explained layer's grid, the same for a
uniform-random and a centre-bias baseline map, the library's CamMultImageConfidenceChange and
ROADCombined (grad-cam map vs the baselines), and the Adebayo model-randomisation check (Spearman /
SSIM of trained vs randomised-image-tower maps; low = passes).
Then the time of one map for one class at 224 px for every method. Works on whatever
VisionCLIP.load(path) gives (untrained projections when no trained model ships: expect chance).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import torch


from engine import VisionCLIP, load_prompt_set
from engine.preprocess import fundus_mask
from engine.saliency import METHODS, TARGETS, explain, make_target
from engine.saliency import metrics as M
from engine.saliency.explain import ImageEmbedder
from engine.saliency.layers import resolve_target_layers
from engine.synth import render_fundus
from engine.synth.schema import CONDITION_FLAGS, CONDITION_KEYS, DR_CLASS


def class_for(key: str) -> str:
    return DR_CLASS if key == "dr" else CONDITION_FLAGS[CONDITION_KEYS[key]]


def mean(xs):
    xs = [x for x in xs if x is not None and np.isfinite(x)]
    return float(np.mean(xs)) if xs else float("nan")


def layer_grid(model, layers, input_tensor: torch.Tensor) -> tuple[int, int]:
    """(h, w) of the finest target layer's map for this input: what the CAM is drawn on before upsampling."""
    targets, reshape = resolve_target_layers(model.network.visual, layers)
    grids = []

    def record(module, inputs, output):
        out = output[0] if isinstance(output, (tuple, list)) else output
        grids.append(tuple((reshape(out) if reshape else out).shape[-2:]))

    hooks = [t.register_forward_hook(record) for t in targets]
    try:
        with torch.no_grad():
            ImageEmbedder(model.network)(input_tensor[None].to(model.device))
    finally:
        for h in hooks:
            h.remove()
    return max(grids, key=lambda g: g[0] * g[1])


def evaluate_condition(model, prompt_set, key, args, random_model):
    cls = class_for(key)
    rows = {k: [] for k in ("pg_cam", "pg_cam_tol", "pg_rand", "pg_centre", "pg_centre_tol", "er_cam", "er_max", "er_rand",
                            "er_centre", "share", "prob", "mult_cam", "mult_rand", "mult_centre", "road_cam",
                            "road_rand", "road_centre", "sanity_rho", "sanity_ssim")}
    used = 0
    grid = None
    seed = args.seed
    tries = 0
    while used < args.n and tries < args.n * 3:
        tries += 1
        seed += 1
        r = render_fundus(seed, size=args.size, conditions=[key if key != "dr" else "dr3"])
        mask = M.condition_mask(r.masks, cls)
        if mask is None:
            continue
        image = r.image
        fov = fundus_mask(image)
        mask &= fov
        if not mask.any():
            continue
        res = explain(model, image, prompt_set, cls, method=args.method, target=args.target, layers=args.layers)
        prepared = model.transform.prepare(image)
        grid = grid or layer_grid(model, args.layers, prepared.tensor)
        rand = M.uniform_random_map(mask.shape, fov, seed=seed)
        centre = M.centre_bias_map(mask.shape, fov)
        tol = max(1, round(args.tolerance * args.size / 512))
        rows["pg_cam"].append(M.pointing_game(res.map, mask))
        rows["pg_cam_tol"].append(M.pointing_game(res.map, mask, tolerance=tol))
        rows["pg_rand"].append(M.pointing_game(rand, mask))
        rows["pg_centre"].append(M.pointing_game(centre, mask))
        rows["pg_centre_tol"].append(M.pointing_game(centre, mask, tolerance=tol))
        rows["er_cam"].append(M.energy_ratio(res.map, mask, fov))
        best = prepared.to_original(M.best_map_on_grid(prepared.to_input(mask), grid))
        rows["er_max"].append(M.energy_ratio(best * fov, mask, fov))
        rows["er_rand"].append(M.energy_ratio(rand, mask, fov))
        rows["er_centre"].append(M.energy_ratio(centre, mask, fov))
        rows["share"].append(mask.sum() / fov.sum())
        rows["prob"].append(res.probability)

        # the library's perturbation metrics on the model input: grad-cam vs the two baselines
        in_fov = prepared.fov
        s = in_fov.shape
        maps = {"cam": res.input_map, "rand": M.uniform_random_map(s, in_fov, seed=seed),
                "centre": M.centre_bias_map(s, in_fov)}
        target, _ = make_target(model, prompt_set, cls, args.target)
        pct = args.road_percentiles if used < args.road else ()
        for name, m in maps.items():
            out = M.library_faithfulness(model.network, prepared.tensor, m, target, percentiles=pct)
            rows[f"mult_{name}"].append(out["cam_mult_change"])
            if "road_combined" in out:
                rows[f"road_{name}"].append(out["road_combined"])
        if used < args.sanity:
            sanity = M.sanity_check(model, image, prompt_set, cls, method=args.method, target=args.target,
                                    layers=args.layers, randomised=random_model, trained=res)
            rows["sanity_rho"].append(sanity["spearman"])
            rows["sanity_ssim"].append(sanity["ssim"])
        used += 1
    summary = {k: mean([float(x) for x in v]) for k, v in rows.items()}
    summary["images"] = used
    summary["grid"] = list(grid) if grid else None
    summary["class"] = cls
    return summary


def time_methods(model, prompt_set, args):
    r = render_fundus(args.seed + 1000, size=224, conditions=["dr3"])
    cls = prompt_set.classes[min(1, len(prompt_set) - 1)]
    out = {}
    for method in METHODS:
        if method == "scorecam" and args.skip_scorecam:
            continue
        repeats = 1 if method == "scorecam" else args.repeats
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if method != "scorecam":  # warm-up
                explain(model, r.image, prompt_set, cls, method=method, layers=args.layers)
            times, cpu = [], []
            for _ in range(repeats):
                t, c = time.perf_counter(), time.process_time()
                explain(model, r.image, prompt_set, cls, method=method, layers=args.layers)
                times.append((time.perf_counter() - t) * 1000)
                cpu.append((time.process_time() - c) * 1000)
        out[method] = {"median_ms": statistics.median(times), "min_ms": min(times), "repeats": repeats,
                       "cpu_ms": statistics.median(cpu)}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="checkpoint or folder (default: VisionCLIP.load())")
    p.add_argument("--n", type=int, default=20, help="images per condition (default 20; 0: speed only)")
    p.add_argument("--conditions", nargs="+", default=["dr", "amd", "glaucoma", "pathologic_myopia"])
    p.add_argument("--prompts", default="screening")
    p.add_argument("--method", default="gradcam", choices=list(METHODS))
    p.add_argument("--target", choices=list(TARGETS), default=None,
                   help="score explained (default: explain()'s, softmax against the other classes)")
    p.add_argument("--layers", default=None,
                   help="target layers inside the image tower, comma-separated, or 'detail' for the stride-4 stage (default: explain()'s)")
    p.add_argument("--size", type=int, default=512, help="synthetic photograph side (default 512)")
    p.add_argument("--tolerance", type=int, default=15, help="pointing-game tolerance in px at 512 (default 15)")
    p.add_argument("--road", type=int, default=1, help="images per condition scored with ROAD (slow; default 1)")
    p.add_argument("--road-percentiles", type=lambda s: [int(x) for x in s.split(",")], default=[30, 70])
    p.add_argument("--sanity", type=int, default=5, help="images per condition for the Adebayo check (default 5)")
    p.add_argument("--repeats", type=int, default=5, help="timing repeats per method (default 5)")
    p.add_argument("--skip-scorecam", action="store_true", help="do not time ScoreCAM (slow on CPU)")
    p.add_argument("--no-speed", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = p.parse_args(argv)

    model = VisionCLIP.load(args.model)
    prompt_set = load_prompt_set(args.prompts)
    random_model = M.randomize_image_tower(model, seed=args.seed)
    print(f"model {model.model_id} trained={model.is_trained} | method {args.method}, target {args.target or 'default (softmax)'} | {args.n} images/condition "
          f"at {args.size}px | torch threads {torch.get_num_threads()} | load average {os.getloadavg()[0]:.1f}")
    results = {"model": model.model_id, "trained": model.is_trained, "method": args.method, "conditions": {}}
    hdr = (f"{'condition':34s} {'n':>3s} {'share':>6s} {'P(cls)':>6s} | {'PG cam':>6s} {'tol':>5s} {'rand':>5s} "
           f"{'ctr':>5s} {'ctrtol':>6s} | {'ER cam':>6s} {'max':>5s} {'rand':>5s} {'ctr':>5s} | {'mult cam':>8s} {'rand':>6s} "
           f"{'ctr':>6s} | {'ROAD cam':>8s} {'rand':>6s} {'ctr':>6s} | {'rho':>5s} {'ssim':>5s}")
    if args.n > 0:
        print(hdr)
    for key in args.conditions if args.n > 0 else []:
        cls = class_for(key)
        if cls not in prompt_set:
            print(f"{cls}: not in the prompt set, skipped")
            continue
        t = time.time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s = evaluate_condition(model, prompt_set, key, args, random_model)
        results["conditions"][cls] = s
        print(f"{cls:34s} {s['images']:3d} {s['share']:6.3f} {s['prob']:6.3f} | {s['pg_cam']:6.2f} {s['pg_cam_tol']:5.2f} "
              f"{s['pg_rand']:5.2f} {s['pg_centre']:5.2f} {s['pg_centre_tol']:6.2f} | {s['er_cam']:6.2f} {s['er_max']:5.2f} {s['er_rand']:5.2f} "
              f"{s['er_centre']:5.2f} | {s['mult_cam']:8.4f} {s['mult_rand']:6.4f} {s['mult_centre']:6.4f} | "
              f"{s['road_cam']:8.4f} {s['road_rand']:6.4f} {s['road_centre']:6.4f} | {s['sanity_rho']:5.2f} "
              f"{s['sanity_ssim']:5.2f}   ({time.time() - t:.0f}s)", flush=True)
    if args.n > 0:
        print("PG: pointing game (share of images whose map maximum is in a lesion mask; chance ~ share); tol: "
              f"within {args.tolerance}px@512; ER: energy ratio in masks (1 = uniform); "
              "max: the best ER any map on the layer's grid can reach; mult: CamMultImageConfidence"
              "Change; ROAD: ROADCombined (higher = more faithful); rho/ssim: trained vs randomised tower (low = passes)")
    if not args.no_speed:
        speed = time_methods(model, prompt_set, args)
        results["speed_ms_224"] = speed
        print(f"one map, one class, 224 px photograph, layers {args.layers or 'default'} (explain() end to end; load average {os.getloadavg()[0]:.1f}):")
        for method, v in speed.items():
            print(f"  {method:19s} median {v['median_ms']:8.0f} ms  min {v['min_ms']:8.0f} ms  "
                  f"CPU time {v['cpu_ms']:8.0f} ms (all threads)  ({v['repeats']} runs)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
