"""Zero-shot results of a model for its model card: held-out synthetic data and the real eval folders.

    python -m bench.model_card [--model assets/model] [--eval-root ../shared/eval] [--synthetic-n 440] \
        [--versus OTHER_MODEL]

Prints Markdown tables (balanced accuracy against chance with its 95% bootstrap interval, AUC per
class, confusion matrices) with the `visionclip eval` command that reproduces each figure. Real
folders are evaluation only. With ``--versus`` each table also gives the balanced accuracy of
``--model`` minus that of the other model on the same images, with a paired bootstrap interval.
A folder scored with a grouped prompt set (classes made of subclasses) is also scored with the flat
set of its classes, and the grouped table gives the difference between the two, paired likewise.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


from bench.common import EVAL_ROOT
from engine import VisionCLIP, load_preset
from engine.evaluate import compare_results, embed_folder, evaluate
from engine.memory import keep_freed_memory
from engine.synth.benchmark import HELD_OUT_SEED, write_benchmark

# eval folder -> prompt presets matching its labels; a grouped set first, then the flat one it is compared with
REAL_FOLDERS = {"eyedisease_dev": ("eyedisease_grouped", "eyedisease"), "palm_dev": ("palm",)}


def ci(r: dict, key: str) -> str:
    lo, hi = r["ci95"][key]
    return f"{lo:.3f}-{hi:.3f}"


def versus_line(r: dict, other: dict, other_id: str) -> str:
    d = compare_results(other, r, resamples=1000)
    lo, hi = d["ci95"]
    return (f"Against `{other_id}` on the same images: balanced accuracy {d['balanced_accuracy_difference']:+.3f} "
            f"(paired 95% CI {lo:+.3f} to {hi:+.3f}); mean AUC {r['mean_auc'] - other['mean_auc']:+.3f}.\n")


def prompts_line(r: dict, r_other: dict, name: str) -> str:
    d = compare_results(r_other, r, resamples=1000)
    lo, hi = d["ci95"]
    return (f"The `{name}` prompts minus these, same model and images: balanced accuracy "
            f"{d['balanced_accuracy_difference']:+.3f} (paired 95% CI {lo:+.3f} to {hi:+.3f}); "
            f"mean AUC {r['mean_auc'] - r_other['mean_auc']:+.3f}.\n")


def table(title: str, command: str, r: dict) -> str:
    classes = r["classes"]
    lines = [f"### {title}", "", f"`{command}`", "",
             f"n = {r['n']}; balanced accuracy **{r['balanced_accuracy']:.3f}** (95% CI {ci(r, 'balanced_accuracy')}; "
             f"chance {r['chance_balanced_accuracy']:.3f}); accuracy {r['accuracy']:.3f}; macro F1 {r['macro_f1']:.3f}; "
             f"mean AUC **{r['mean_auc']:.3f}** (95% CI {ci(r, 'mean_auc')}); "
             f"kappa {r['kappa']:.3f}", "",
             "| label \\ predicted | " + " | ".join(classes) + " | recall | AUC |",
             "|---|" + "---|" * (len(classes) + 2)]
    for c, row in zip(classes, r["confusion_matrix"]):
        total = sum(row)
        recall = f"{row[classes.index(c)] / total:.3f}" if total else "n/a"
        auc = f"{r['auc'][c]:.3f}" if c in r["auc"] else "n/a"
        lines.append(f"| {c} | " + " | ".join(str(v) for v in row) + f" | {recall} | {auc} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--eval-root", default=str(EVAL_ROOT))
    ap.add_argument("--synthetic-n", type=int, default=440)
    ap.add_argument("--size", type=int, default=None, help="synthetic render side (default: the model's input size)")
    ap.add_argument("--versus", default=None, metavar="MODEL", help="another model to compare with, image by image")
    args = ap.parse_args()
    keep_freed_memory()  # as `visionclip eval` does: batches otherwise fault their buffers in again
    model = VisionCLIP.load(args.model)
    other = VisionCLIP.load(args.versus) if args.versus else None

    def scored(data, preset, other_data=None):
        r = evaluate(model, data, load_preset(preset), bootstrap=1000)
        if other is None:
            return r, ""
        return r, versus_line(r, evaluate(other, other_data or data, load_preset(preset)), other.model_id)
    args.size = args.size or model.image_size
    model_arg = f" --model {args.model}" if args.model else ""
    print(f"## Zero-shot results of `{model.model_id}`\n")
    with tempfile.TemporaryDirectory() as tmp:
        bench = write_benchmark(Path(tmp) / "synbench", args.synthetic_n, HELD_OUT_SEED, args.size)
        r, vs = scored(bench, "screening")
        cmd = (f"visionclip synth --benchmark --out synbench --n {args.synthetic_n} --seed {HELD_OUT_SEED} --size {args.size} && "
               f"visionclip eval --data synbench --prompts screening{model_arg}")
        print(table(f"Held-out synthetic images ({args.synthetic_n}, one condition each, screening prompts)", cmd, r) + vs)
    for folder, presets in REAL_FOLDERS.items():
        d = Path(args.eval_root) / folder
        if not (d / "labels.csv").is_file():
            print(f"### {folder}\n\nnot found at {d}\n")
            continue
        embedded = embed_folder(model, d)  # encoded once per model, scored with each prompt set
        other_embedded = embed_folder(other, d) if other else None
        results = {}
        for preset in presets:
            results[preset], vs = scored(embedded, preset, other_embedded)
            if preset != presets[0]:
                vs += prompts_line(results[presets[0]], results[preset], presets[0])
            print(table(f"Real photographs: {folder} (prompts: {preset})",
                        f"visionclip eval --data {d} --prompts {preset}{model_arg}", results[preset]) + vs)


if __name__ == "__main__":
    main()
