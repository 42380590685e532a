"""Saliency faithfulness per finding, and speed, on synthetic fundus photographs with lesion masks.

    python bench/saliency.py [--model PATH] [--n 20] [--maps multiscale gradcam gradcam-elementwise@detail]

Each rendered image of a condition is explained for the condition's class with every map in ``--maps``
(``method`` or ``method@layers``; the first is the default, ``engine.saliency.explain`` without options),
and every lesion mask the generator drew for that class (``metrics.LESION_MASKS``) is scored on its own:

- pointing game with a fixed tolerance (the map's peak within ``--tolerance`` px at 512 of the finding),
  beside a uniform random map's;
- energy ratio (mean map in the finding / mean map in the field of view; 1 = uniform), beside the random map's;
- "any" rows: the same for the union of the class's masks;
- two references, per finding: the "lesion-uniform" map (``lesion_uniform_map``: the union of all the class's
  masks, uniform inside, drawn through the default map's grid and blur), a perfect class-level map, scored
  with the same metrics; and, of the default map's misses, the share whose peak lands on another finding of
  the same class (within the same tolerance) rather than on background (``peak_on_other``);
- per class, the one-peak bound (``one_peak_reach``): the most of an image's findings that one peak can hit,
  which caps the mean pointing game over the class's findings for any map and any model;
- with ``--finding-prompts``, the default map explained for a prompt naming each finding (the generator's
  caption words for it, ``FINDING_WORDS``) in place of the class's prompts, scored on that finding.

Then per condition, on the first ``--road`` images: the ROAD deletion / insertion curve of the default map
against a random map (change of the class's score when the p % most relevant pixels, or all but them, are
imputed);
the Adebayo model-randomisation check of the default map (rank correlation and SSIM with the map of a
randomised image tower: low passes); and the time of one map, end to end, for every map in ``--maps`` in the
same run, on a 224 px photograph (the 300 ms budget on 2 CPU cores).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import warnings
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import torch
from scipy import ndimage

from engine import VisionCLIP, load_prompt_set
from engine.preprocess import fundus_mask
from engine.prompts import PromptSet
from engine.saliency import DEFAULT_METHOD, TARGETS, explain, make_target
from engine.saliency import metrics as M
from engine.saliency.layers import DETAIL_STRIDE
from engine.saliency.multiscale import SMOOTHING
from engine.synth import render_fundus
from engine.synth.layer import FINDING_WORDS
from engine.synth.schema import CONDITION_FLAGS, CONDITION_KEYS, DR_CLASS

CONDITIONS = ["dr", "dme", "amd", "glaucoma", "pathologic_myopia", "hypertensive_retinopathy", "rvo", "erm",
              "optic_atrophy"]


def class_for(key: str) -> str:
    """The class a condition key renders: "dr" (severe, grade 3) and "dr1".."dr4" (that grade) are DR."""
    return DR_CLASS if key.startswith("dr") and key[2:] in ("", "1", "2", "3", "4") else CONDITION_FLAGS[CONDITION_KEYS[key]]


def parse_map(spec: str) -> tuple[str, str | None]:
    method, _, layers = spec.partition("@")
    return method, layers or None


def grown(mask: np.ndarray, tolerance: int) -> np.ndarray:
    yy, xx = np.ogrid[-tolerance:tolerance + 1, -tolerance:tolerance + 1]
    return ndimage.binary_dilation(mask, structure=(xx * xx + yy * yy) <= tolerance * tolerance)


def score(full: np.ndarray, masks: dict[str, tuple[np.ndarray, np.ndarray]], fov: np.ndarray) -> dict:
    """{finding: (pointing game hit with tolerance, energy ratio)} of one map on the original photograph."""
    peak = np.unravel_index(int(np.argmax(full)), full.shape)
    return {name: (bool(near[peak]), M.energy_ratio(full, mask, fov)) for name, (mask, near) in masks.items()}


REFERENCE = "lesion-uniform"  # the perfect class-level map's column
FINDING_PROMPT = "finding prompt"  # the default map explained for a prompt naming the finding
MISSES = "misses"  # per finding: for each miss of the default map, whether its peak lies on another finding
ONE_PEAK = "one-peak reach"  # per class ("any" rows): (findings one peak can hit at best, findings) per image


def is_union(name: str) -> bool:
    return name.startswith("any (")


def lesion_uniform_map(union: np.ndarray, prepared, fov: np.ndarray, stride: int = DETAIL_STRIDE) -> np.ndarray:
    """A perfect class-level map drawn as the default map is: 1 on every lesion of the class (``union``, on the
    photograph) and 0 elsewhere, brought onto the model input, averaged on the fine stage's grid (``stride``
    px), upsampled bilinearly and blurred by ``multiscale``'s Gaussian as grad-cam and ``MultiScaleCAM`` do,
    then put back on the photograph inside ``fov`` and scaled to [0, 1]. It knows the class's lesions and
    nothing about their types: its peak lies where they are densest."""
    x = prepared.to_input(np.asarray(union, dtype=np.float32))
    side = x.shape[0]
    cells = max(1, side // stride)
    x = cv2.resize(cv2.resize(x, (cells, cells), interpolation=cv2.INTER_AREA), (side, side),
                   interpolation=cv2.INTER_LINEAR)
    x = cv2.GaussianBlur(x, (0, 0), max(0.5, SMOOTHING * side)) * prepared.fov
    full = np.clip(prepared.to_original(x), 0, None) * np.asarray(fov, dtype=bool)
    hi = float(full.max())
    return (full / hi).astype(np.float32) if hi > 0 else full.astype(np.float32)


def peak_on_other(full: np.ndarray, masks: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, bool]:
    """For each finding whose pointing game the map loses, whether its peak lies on another finding of the same
    class (within the same tolerance: the grown masks) rather than on background. Findings it hits and the
    "any" rows are left out."""
    peak = np.unravel_index(int(np.argmax(full)), full.shape)
    near = {name: grown_mask for name, (_, grown_mask) in masks.items() if not is_union(name)}
    return {name: any(other[peak] for o, other in near.items() if o != name)
            for name, here in near.items() if not here[peak]}


def one_peak_reach(masks: dict[str, tuple[np.ndarray, np.ndarray]]) -> tuple[int, int]:
    """How many of one image's findings a single peak can hit at best (the most grown masks that cover one
    pixel), and how many findings the image holds. Summed over a class's images, the first over the second
    bounds the mean pointing game over its findings (each weighted by its images) of any map with one peak,
    whatever the model: a map can hit all of the class's findings only where they lie within the tolerance
    of one another."""
    near = [grown_mask for name, (_, grown_mask) in masks.items() if not is_union(name)]
    return (int(np.sum(near, axis=0, dtype=np.int32).max()), len(near)) if near else (0, 0)


def one_peak_bound(reaches: list[tuple[int, int]]) -> float:
    """The bound of ``one_peak_reach`` over a class's images (nan without findings)."""
    hits, findings = (sum(col) for col in zip(*reaches)) if reaches else (0, 0)
    return hits / findings if findings else float("nan")


def finding_words(finding: str) -> list[str]:
    """The prompts that name one finding: the generator's caption words for it, else its mask name."""
    return list(FINDING_WORDS.get(finding) or [finding.replace("_", " ")])


def finding_prompt_set(prompt_set: PromptSet, cls: str, finding: str) -> PromptSet:
    """``prompt_set`` with ``cls``'s prompts replaced by prompts naming ``finding``: the map explains that
    finding's score (against the other classes, under the default softmax target) under the class's name."""
    doc = prompt_set.to_dict()
    doc[cls] = finding_words(finding)
    return PromptSet(doc, name=f"{prompt_set.name or 'prompts'}:{finding}")


def evaluate_condition(model, prompt_set, key, args, random_model, rows, roads, sanity):
    cls = class_for(key)
    tol = max(1, round(args.tolerance * args.size / 512))
    used, seed = 0, args.seed
    while used < args.n and seed < args.seed + 3 * args.n:
        seed += 1
        r = render_fundus(seed, size=args.size, conditions=["dr3" if key == "dr" else key])
        fov = fundus_mask(r.image)
        masks = {n: r.masks[n] & fov for n in M.LESION_MASKS.get(cls, ()) if n in r.masks and (r.masks[n] & fov).any()}
        if not masks:
            continue
        masks[f"any ({cls})"] = np.logical_or.reduce(list(masks.values()))
        masks = {n: (m, grown(m, tol)) for n, m in masks.items()}
        rows[f"any ({cls})"][ONE_PEAK].append(one_peak_reach(masks))
        prepared = model.transform.prepare(r.image)
        results = {}
        for spec in args.maps:
            method, layers = parse_map(spec)
            res = explain(model, r.image, prompt_set, cls, method=method, target=args.target, layers=layers)
            results[spec] = res
            for name, (hit, er) in score(res.map, masks, fov).items():
                rows[name][spec].append((hit, er))
        rand = M.uniform_random_map(fov.shape, fov, seed=seed)
        for name, (hit, er) in score(rand, masks, fov).items():
            rows[name]["random"].append((hit, er))
        default = results[args.maps[0]]
        for name, other in peak_on_other(default.map, masks).items():
            rows[name][MISSES].append(other)
        union = lesion_uniform_map(masks[f"any ({cls})"][0], prepared, fov)
        for name, (hit, er) in score(union, masks, fov).items():
            rows[name][REFERENCE].append((hit, er))
        if args.finding_prompts:
            method, layers = parse_map(args.maps[0])
            for name, pair in masks.items():
                if is_union(name):
                    continue
                res = explain(model, r.image, finding_prompt_set(prompt_set, cls, name), cls, method=method,
                              target=args.target, layers=layers)
                rows[name][FINDING_PROMPT].append(score(res.map, {name: pair}, fov)[name])
        if used < args.road:
            target, _ = make_target(model, prompt_set, cls, args.target)
            for label, m in (("map", default.input_map), ("random", M.uniform_random_map(prepared.fov.shape, prepared.fov, seed))):
                roads[cls][label].append(M.road_curve(model.network, prepared.tensor, m, target, args.road_percentages))
        if used < args.sanity:
            check = M.sanity_check(model, r.image, prompt_set, cls, method=parse_map(args.maps[0])[0], target=args.target,
                                   layers=parse_map(args.maps[0])[1], randomised=random_model, trained=default)
            sanity[cls].append((check["spearman"], check["ssim"]))
        used += 1
    return used


def mean(xs):
    xs = [x for x in xs if x is not None and np.isfinite(x)]
    return float(np.mean(xs)) if xs else float("nan")


def print_findings(rows, specs, finding_prompts=False):
    """The per-finding table: each map's pointing game and energy ratio, the random map's, the lesion-uniform
    reference's, the default map on finding prompts (with ``finding_prompts``), and the share of the default
    map's misses that land on another finding of the class ("misses on other": share (count / misses))."""
    cols = [*specs, "random", REFERENCE, *([FINDING_PROMPT] if finding_prompts else [])]
    print(f"\n{'finding':44s} {'n':>3s} | " + " | ".join(f"{c[:22]:>22s}" for c in cols) + f" | {'misses on other':>16s}")
    print(f"{'':44s} {'':>3s} | " + " | ".join(f"{'pointing':>11s} {'energy':>10s}" for _ in cols)
          + f" | {'(default map)':>16s}")
    table = {}
    for name in sorted(rows, key=lambda n: (is_union(n), n)):
        cells = {c: (mean([h for h, _ in rows[name][c]]), mean([e for _, e in rows[name][c]])) for c in cols}
        misses = rows[name][MISSES]
        table[name] = {"n": len(rows[name][cols[0]]), **{c: {"pointing": p, "energy": e} for c, (p, e) in cells.items()}}
        if not is_union(name):
            table[name]["misses"] = len(misses)
            table[name]["misses_on_other_finding"] = mean(misses)
        other = "" if is_union(name) else (f"{mean(misses):.2f} ({sum(misses)}/{len(misses)})" if misses else "no misses")
        print(f"{name[:44]:44s} {table[name]['n']:3d} | "
              + " | ".join(f"{cells[c][0]:11.2f} {cells[c][1]:10.2f}" for c in cols) + f" | {other:>16s}")
    print_one_peak(rows, table)
    return table


def print_one_peak(rows, table):
    """Per class, the most a map with one peak can score: findings per image, the most of them one peak can
    hit, and the bound on the mean pointing game over the class's findings (``one_peak_bound``)."""
    print("\none peak per map: findings per image, the most one peak can hit, and the bound on the mean pointing "
          "game over the class's findings (any map, any model)")
    for name in sorted(n for n in rows if is_union(n) and rows[n][ONE_PEAK]):
        reaches = rows[name][ONE_PEAK]
        reach, findings = (sum(col) / len(reaches) for col in zip(*reaches))
        bound = one_peak_bound(reaches)
        table[name]["one_peak"] = {"findings_per_image": findings, "reach_per_image": reach, "bound": bound}
        print(f"  {name[5:-1][:38]:38s} findings {findings:4.2f}  one peak hits at most {reach:4.2f}  bound {bound:.2f}")


def print_road(roads, sanity, args):
    print(f"\nROAD on the default map ({args.maps[0]}) against a random map: change of the class's score after "
          f"imputing the p % most relevant pixels (deletion: lower = more faithful) and all but the p % most relevant "
          f"(insertion: higher = more faithful); p = {args.road_percentages}. Sanity: rank corr. / SSIM with the "
          "map of a randomised image tower (low passes).")
    out = {}
    for cls in sorted(set(roads) | set(sanity)):
        curves = {k: np.mean([[*c["deletion"], *c["insertion"]] for c in v], axis=0) for k, v in roads[cls].items()}
        k = len(args.road_percentages)
        fmt = lambda v: " ".join(f"{x:+.3f}" for x in v)  # noqa: E731
        rho, ssim = mean([a for a, _ in sanity[cls]]), mean([b for _, b in sanity[cls]])
        out[cls] = {"road": {n: {"deletion": list(map(float, c[:k])), "insertion": list(map(float, c[k:]))}
                             for n, c in curves.items()}, "sanity_spearman": rho, "sanity_ssim": ssim}
        if curves:
            print(f"  {cls[:34]:34s} deletion map {fmt(curves['map'][:k])} random {fmt(curves['random'][:k])} | "
                  f"insertion map {fmt(curves['map'][k:])} random {fmt(curves['random'][k:])} | "
                  f"sanity {rho:.2f} / {ssim:.2f}")
        elif sanity[cls]:
            print(f"  {cls[:34]:34s} sanity {rho:.2f} / {ssim:.2f}")
    return out


def time_maps(model, prompt_set, args):
    """One map, one class, ``explain()`` end to end on a 224 px photograph, for every map in the same run."""
    r = render_fundus(args.seed + 1000, size=224, conditions=["dr3"])
    cls = prompt_set.classes[min(1, len(prompt_set) - 1)]
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for spec in args.maps:  # warm-up of every map first, then interleaved runs: load changes hit all alike
            explain(model, r.image, prompt_set, cls, method=parse_map(spec)[0], layers=parse_map(spec)[1])
        times = defaultdict(list)
        for _ in range(args.repeats):
            for spec in args.maps:
                t = time.perf_counter()
                explain(model, r.image, prompt_set, cls, method=parse_map(spec)[0], layers=parse_map(spec)[1])
                times[spec].append((time.perf_counter() - t) * 1000)
    for spec, ts in times.items():
        out[spec] = {"median_ms": statistics.median(ts), "min_ms": min(ts), "repeats": len(ts)}
    return out


def where_on_real(model, prompt_set, folder: str, cls: str, args) -> dict:
    """Where each map points on real photographs of one class (labels.csv of an evaluation folder): the share
    of photographs whose "where" line names each kind of region. Measures only; nothing is fitted."""
    import csv

    from engine.preprocess import load_image
    from engine.saliency import describe_map

    with open(Path(folder) / "labels.csv", newline="") as f:
        paths = [r["path"] for r in csv.DictReader(f) if r["label"] == cls][:args.real_n]
    counts = {spec: defaultdict(int) for spec in args.maps}
    for rel in paths:
        image = load_image(Path(folder) / rel)
        name = Path(rel).stem.lower()  # ODIR-style names say the eye: 1062_right
        eye = "right" if name.endswith("right") else "left" if name.endswith("left") else None
        for spec in args.maps:
            res = explain(model, image, prompt_set, cls, method=parse_map(spec)[0], layers=parse_map(spec)[1])
            region = describe_map(res.map, image, eye).region if res.map.max() > 0 else "empty map"
            counts[spec][region.split(",")[0].split(" ")[-1] if "arcade" in region or "quadrant" in region
                         else region.split(",")[0]] += 1
    kinds = sorted({k for c in counts.values() for k in c})
    print(f"\nwhere the map points on {len(paths)} real photographs of {cls} in {folder} (share of photographs):")
    print(f"  {'map':28s} " + " ".join(f"{k[:13]:>13s}" for k in kinds))
    for spec, c in counts.items():
        print(f"  {spec:28s} " + " ".join(f"{c[k] / max(len(paths), 1):13.2f}" for k in kinds))
    return {"images": len(paths), "class": cls, "shares": {s: {k: c[k] / max(len(paths), 1) for k in kinds}
                                                          for s, c in counts.items()}}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="checkpoint or folder (default: VisionCLIP.load())")
    p.add_argument("--n", type=int, default=20, help="images per condition (default 20; 0: speed only)")
    p.add_argument("--conditions", nargs="+", default=CONDITIONS)
    p.add_argument("--maps", nargs="+", default=[DEFAULT_METHOD, "gradcam", "gradcam-elementwise@detail"],
                   help="maps to compare, method[@layers]; the first gets ROAD and the sanity check "
                        f"(default: {DEFAULT_METHOD} (the default), gradcam (the earlier default), gradcam-elementwise@detail)")
    p.add_argument("--prompts", default="screening")
    p.add_argument("--target", choices=list(TARGETS), default=None, help="score explained (default: explain()'s)")
    p.add_argument("--size", type=int, default=512, help="synthetic photograph side (default 512)")
    p.add_argument("--tolerance", type=int, default=15, help="pointing-game tolerance in px at 512 (default 15)")
    p.add_argument("--road", type=int, default=1, help="images per condition with ROAD curves (slow; default 1)")
    p.add_argument("--road-percentages", type=lambda s: [int(x) for x in s.split(",")], default=[5, 20, 50],
                   help="shares of the pixels deleted / kept on the ROAD curves (default 5,20,50)")
    p.add_argument("--sanity", type=int, default=3, help="images per condition for the Adebayo check (default 3)")
    p.add_argument("--repeats", type=int, default=7, help="timing repeats per map (default 7)")
    p.add_argument("--no-speed", action="store_true")
    p.add_argument("--skip-scorecam", action="store_true", help="kept for bench/run_all.py: ScoreCAM is timed only "
                   "when named in --maps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--real", nargs=2, metavar=("FOLDER", "CLASS"), default=None,
                   help="also say where each map points on a folder's real photographs of CLASS (its labels.csv)")
    p.add_argument("--real-n", type=int, default=40, help="real photographs at most (default 40)")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    p.add_argument("--finding-prompts", action="store_true",
                   help="also explain each finding with the default map for a prompt naming it (the generator's "
                        "caption words) in place of the class's prompts, and report it beside the default")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)

    model = VisionCLIP.load(args.model)
    prompt_set = load_prompt_set(args.prompts)
    print(f"model {model.model_id} trained={model.is_trained} | maps {', '.join(args.maps)} | target "
          f"{args.target or 'default (softmax)'} | {args.n} images/condition at {args.size}px | pointing tolerance "
          f"{args.tolerance}px@512 | torch threads {torch.get_num_threads()} | load average {os.getloadavg()[0]:.1f}")
    results = {"model": model.model_id, "maps": args.maps, "args": {k: v for k, v in vars(args).items()}}
    rows, roads, sanity = defaultdict(lambda: defaultdict(list)), defaultdict(lambda: defaultdict(list)), defaultdict(list)
    random_model = M.randomize_image_tower(model, seed=args.seed) if args.sanity else None
    for key in args.conditions if args.n > 0 else []:
        if class_for(key) not in prompt_set:
            print(f"{class_for(key)}: not in the prompt set, skipped")
            continue
        t = time.time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            used = evaluate_condition(model, prompt_set, key, args, random_model, rows, roads, sanity)
        print(f"  {class_for(key)}: {used} images ({time.time() - t:.0f} s)", flush=True)
    if rows:
        results["findings"] = print_findings(rows, args.maps, args.finding_prompts)
        results["conditions"] = print_road(roads, sanity, args)
        for name, row in results["findings"].items():  # bench/run_all.py's summary: the default map, any lesion
            if name.startswith("any ("):
                default, rand = row[args.maps[0]], row["random"]
                results["conditions"].setdefault(name[5:-1], {}).update(
                    pg_cam=default["pointing"], er_cam=default["energy"], pg_rand=rand["pointing"], er_rand=rand["energy"])
    if args.real:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            results["real"] = where_on_real(model, prompt_set, *args.real, args)
    if not args.no_speed:
        results["speed_ms_224"] = speed = time_maps(model, prompt_set, args)
        print(f"\none map, one class, 224 px photograph, explain() end to end, interleaved (torch threads "
              f"{torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}):")
        for spec, v in speed.items():
            print(f"  {spec:28s} median {v['median_ms']:6.0f} ms  min {v['min_ms']:6.0f} ms  ({v['repeats']} runs)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
