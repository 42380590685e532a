"""The screening gauge: normal versus any finding, on every real folder that has healthy eyes.

    python -m bench.screening [--model assets/model] [--eval-root ../shared/eval] [--prompts screening] \
        [--versus OTHER_MODEL] [--bootstrap 1000] [--json FILE]

For each folder under ``--eval-root`` whose labels.csv has 'normal' and at least one other label, with
the prompt set and all its classes: specificity (healthy eyes called normal), sensitivity (diseased
eyes not called normal), the AUC of P(abnormal), and per condition against the same folder's healthy
eyes, with 95% stratified bootstrap intervals. Then the same model's decision under the old top-1 rule
(the set without its screening rule), or ``--versus`` another model with the same prompt set, paired
on the same photographs, and the ship rule read off the differences. Real folders are evaluation only.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.common import EVAL_ROOT
from engine import VisionCLIP, load_prompt_set
from engine.evaluate import embed_folder, read_labels
from engine.screening_metrics import (paired_mean_auc_difference, paired_screening_difference, score_folder,
                                      screening_metrics)

SHIP_MIN_SENSITIVITY = 0.80
SHIP_MAX_AUC_DROP = 0.02
MIN_PER_GROUP = 10  # fewer healthy or diseased eyes than this is a smoke test, not an evaluation


def screening_folders(root: Path, min_per_group: int = MIN_PER_GROUP) -> list[Path]:
    """Folders under ``root`` with at least ``min_per_group`` healthy and as many diseased photographs."""
    found = []
    for labels in sorted(root.glob("*/labels.csv")):
        healthy = [label.lower() == "normal" for _, label in read_labels(labels.parent)]
        if min(sum(healthy), len(healthy) - sum(healthy)) >= min_per_group:
            found.append(labels.parent)
    return found


def fmt(m: dict, key: str) -> str:
    if key not in m:
        return "n/a"
    lo, hi = m.get("ci95", {}).get(key, (None, None))
    return f"{m[key]:.3f}" + (f" ({lo:.2f}-{hi:.2f})" if lo is not None else "")


def fmt_diff(d: dict, key: str) -> str:
    if key not in d:
        return "n/a"
    lo, hi = d[key]["ci95"]
    return f"{d[key]['difference']:+.3f} ({lo:+.3f} to {hi:+.3f})"


def table(title: str, metrics: dict[str, dict]) -> str:
    lines = [f"### {title}", "", "| folder | healthy called normal (specificity) | diseased not called normal "
             "(sensitivity) | AUC of P(abnormal) | AUC per condition vs the folder's healthy eyes |",
             "|---|---|---|---|---|"]
    for folder, m in metrics.items():
        per = "; ".join(f"{k[4:]} {fmt(m, k)}" for k in m if k.startswith("auc "))
        lines.append(f"| {folder} (healthy {m['n_healthy']}, diseased {m['n_diseased']}) | {fmt(m, 'specificity')} "
                     f"| {fmt(m, 'sensitivity')} | {fmt(m, 'auc')} | {per} |")
    return "\n".join(lines) + "\n"


def diff_table(title: str, diffs: dict[str, dict], mean_auc: dict) -> str:
    lines = [f"### {title}", "", "| folder | specificity | sensitivity | AUC of P(abnormal) | AUC per condition |",
             "|---|---|---|---|---|"]
    for folder, d in diffs.items():
        per = "; ".join(f"{k[4:]} {fmt_diff(d, k)}" for k in d if k.startswith("auc "))
        lines.append(f"| {folder} | {fmt_diff(d, 'specificity')} | {fmt_diff(d, 'sensitivity')} | {fmt_diff(d, 'auc')} | {per} |")
    lo, hi = mean_auc["ci95"]
    lines += ["", f"Mean over folders of the AUC of P(abnormal): {mean_auc['difference']:+.3f} (paired 95% CI {lo:+.3f} to {hi:+.3f})."]
    return "\n".join(lines) + "\n"


def ship_rule(new: dict[str, dict], diffs: dict[str, dict], mean_auc: dict) -> list[tuple[str, bool]]:
    """The three conditions a new model (or rule) must meet to ship, each with whether it holds."""
    per_condition = [d[k]["difference"] for d in diffs.values() for k in d if k.startswith("auc ")]
    return [
        ("mean AUC of P(abnormal) rises, paired interval above 0", mean_auc["ci95"][0] > 0),
        (f"specificity rises on every folder, sensitivity >= {SHIP_MIN_SENSITIVITY:.2f} on each",
         all(d["specificity"]["difference"] > 0 for d in diffs.values())
         and all(m["sensitivity"] >= SHIP_MIN_SENSITIVITY for m in new.values())),
        (f"no per-condition AUC falls by more than {SHIP_MAX_AUC_DROP}", min(per_condition) >= -SHIP_MAX_AUC_DROP),
    ]


def gauge(model, baseline_model, prompt_set, baseline_set, folders, bootstrap: int, batch_size: int = 32) -> dict:
    """Scores, metrics and paired differences (new minus baseline) for every folder."""
    out = {"new": {}, "baseline": {}, "difference": {}}
    pairs = []
    for folder in folders:
        emb = embed_folder(model, folder, batch_size=batch_size)
        base_emb = emb if baseline_model is model else embed_folder(baseline_model, folder, batch_size=batch_size)
        new, base = score_folder(model, emb, prompt_set), score_folder(baseline_model, base_emb, baseline_set)
        out["new"][folder.name] = screening_metrics(new, bootstrap)
        out["baseline"][folder.name] = screening_metrics(base, bootstrap)
        out["difference"][folder.name] = paired_screening_difference(base, new, max(bootstrap, 1))
        pairs.append((base, new))
    out["mean_auc_difference"] = paired_mean_auc_difference(pairs, max(bootstrap, 1))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model to gauge (default: the shipped one)")
    ap.add_argument("--versus", default=None, help="baseline model (default: the same model under the top-1 rule)")
    ap.add_argument("--eval-root", default=str(EVAL_ROOT))
    ap.add_argument("--prompts", default="screening")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--json", metavar="FILE", help="also write every figure as JSON")
    args = ap.parse_args(argv)
    model = VisionCLIP.load(args.model)
    prompt_set = load_prompt_set(args.prompts)
    if args.versus:
        baseline, baseline_set, what = VisionCLIP.load(args.versus), prompt_set, "`--versus` model, same prompts"
    else:
        baseline, baseline_set, what = model, prompt_set.with_screening(None), "same model, top-1 over all classes"
    folders = screening_folders(Path(args.eval_root))
    if not folders:
        raise SystemExit(f"no folder with healthy and diseased photographs under {args.eval_root}")
    result = gauge(model, baseline, prompt_set, baseline_set, folders, args.bootstrap, args.batch_size)
    command = "python -m bench.screening" + (f" --model {args.model}" if args.model else "") + \
              (f" --versus {args.versus}" if args.versus else "") + f" --prompts {args.prompts}"
    print(f"`{command}`  (model {model.model_id}; prompt set {prompt_set.name}, all {len(prompt_set)} classes; "
          f"95% intervals: stratified bootstrap, {args.bootstrap} resamples)\n")
    print(table("Screening decision", result["new"]))
    print(table(f"Baseline ({what})", result["baseline"]))
    print(diff_table("Decision minus baseline, paired on the same photographs", result["difference"],
                     result["mean_auc_difference"]))
    rule = ship_rule(result["new"], result["difference"], result["mean_auc_difference"])
    print("Ship rule: " + "; ".join(f"{name}: {'yes' if ok else 'NO'}" for name, ok in rule))
    if args.json:
        result["ship_rule"] = {name: ok for name, ok in rule}
        result.update(model_id=model.model_id, baseline_model_id=baseline.model_id, command=command)
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
