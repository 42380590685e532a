"""The ``visionclip`` command: a thin layer over the engine's Python API.

Every user error (bad file, bad prompt set, bad config) ends as one ``visionclip: error: ...`` line
and exit status 2; no traceback.
"""
from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
import warnings

from . import __version__
from .cli_args import add_adapter_argument, add_model_arguments, load_model
from .errors import VisionCLIPError

# Subcommands that live beside their library code: module with add_arguments(parser) and run(args).
EXTERNAL_COMMANDS = {
    "synth": ("engine.synth.cli", "generate synthetic fundus photographs with captions and lesion masks"),
    "train": ("engine.train.main", "contrastive pretraining on synthetic data (also under torchrun)"),
    "explain": ("engine.saliency.cli", "Grad-CAM saliency of one class for an image"),
    "adapt": ("engine.adapt.cli", "fit a few-shot adapter on a labelled folder"),
    "calibrate": ("engine.screening_cli", "fix a prompt set's screening threshold for a model on healthy synthetic renders"),
    "average": ("engine.train.average", "average the weights of models fine-tuned from the same start (model soup)"),
}


def _tqdm_progress(desc: str):
    from tqdm import tqdm

    bar = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=desc, unit="img", file=sys.stderr, disable=None)
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()

    return update


PREDICT_CSV_FIELDS = ["image", "screening", "p_abnormal", "predicted", "laterality", "error"]


def _open_predict_csv(path: str, classes: list[str]):
    import csv

    try:
        fh = open(path, "w", newline="", encoding="utf-8")
    except OSError as e:
        raise VisionCLIPError(f"cannot write {path}: {e.strerror or e}") from None
    writer = csv.DictWriter(fh, fieldnames=PREDICT_CSV_FIELDS + classes, extrasaction="ignore")
    writer.writeheader()
    return fh, writer


def cmd_predict(args) -> int:
    from tqdm import tqdm

    from .batch import expand_inputs, predict_files, summarise
    from .prompts import load_prompt_set

    if args.batch_size < 1:
        raise VisionCLIPError(f"--batch-size must be at least 1, not {args.batch_size}")
    prompt_set = load_prompt_set(args.prompts)
    if getattr(args, "adapter", None):  # engine/adapt/cli.py
        from .adapt.cli import cmd_predict_adapted
        return cmd_predict_adapted(args, prompt_set, load_model(args))
    inputs = expand_inputs(args.images, recursive=args.recursive)
    if not inputs.files:
        raise VisionCLIPError(f"no image files found in {', '.join(args.images)}"
                              + ("" if args.recursive else " (add --recursive for subfolders)"))
    model = load_model(args)
    csv_file, csv_writer = _open_predict_csv(args.csv, prompt_set.classes) if args.csv else (None, None)
    results = []
    bar = tqdm(total=len(inputs.files), desc="predicting", unit="img", file=sys.stderr, disable=None)
    try:
        for r in predict_files(model, inputs.files, prompt_set, batch_size=args.batch_size,
                               progress=lambda done, total: bar.update(1)):
            results.append(r)
            if csv_writer:  # written as it comes: an interrupted run keeps what it scored
                csv_writer.writerow({**r, **_screening_columns(r), **r.get("probabilities", {})})
                csv_file.flush()
            if not args.json:
                bar.write(_predict_line(r, args.top), file=sys.stdout)
    finally:
        bar.close()
        if csv_file:
            csv_file.close()
    summary = summarise(results, inputs.ignored)
    if args.json:
        print(json.dumps({"model_id": model.model_id, "checkpoint": model.metadata.get("checkpoint"),
                          "results": results, "summary": summary}, indent=2))
    ignored = f", {summary['ignored']} non-image files ignored" if summary["ignored"] else ""
    print(f"visionclip: {summary['images']} files: {summary['predicted']} predicted, {summary['errors']} errors{ignored}",
          file=sys.stderr)
    return 0 if summary["predicted"] else 2


def _screening_columns(r: dict) -> dict:
    s = r.get("screening")
    return {"screening": s["decision"], "p_abnormal": f"{s['p_abnormal']:.4f}"} if s else {}


def _predict_line(r: dict, top: int) -> str:
    if "error" in r:
        return f"{r['image']}: error: {r['error']}"
    ranked = sorted(r["probabilities"].items(), key=lambda kv: -kv[1])[:top]
    eye = f" [{r['laterality']}]" if "laterality" in r else ""
    s = r.get("screening")
    lead = f"{s['decision'].upper()} (P(abnormal) {s['p_abnormal']:.3f}); " if s else ""
    return f"{r['image']}{eye}: {lead}" + ", ".join(f"{c} {p:.3f}" for c, p in ranked)


def cmd_eval(args) -> int:
    from .evaluate import evaluate, plot_confusion_matrix
    from .prompts import load_prompt_set

    from .adapt.cli import load_adapter

    prompt_set = load_prompt_set(args.prompts)
    model = load_model(args)
    if args.screening:
        from .screening_cli import print_screening_gauge
        return print_screening_gauge(model, args.data, prompt_set, args.bootstrap, args.batch_size, args.json)
    result = evaluate(model, args.data, prompt_set, all_classes=args.all_classes,
                      progress=_tqdm_progress("evaluating"), batch_size=args.batch_size,
                      predictions_csv=args.predictions, bootstrap=args.bootstrap,
                      adapter=load_adapter(args, model))
    if args.plot:
        plot_confusion_matrix(result, args.plot)
    result.pop("per_image")  # --predictions writes them, with the probabilities
    if args.json:
        print(json.dumps(result))
    else:
        print(f"model {result['model_id']} on {args.data} (n={result['n']})")
        if "adapter" in result:
            print(f"  adapter {result['adapter']['method']}")
        ci = result.get("ci95", {})
        for key in ("accuracy", "balanced_accuracy", "macro_f1", "mean_auc", "kappa"):
            interval = f"  (95% CI {ci[key][0]:.4f}-{ci[key][1]:.4f})" if key in ci else ""
            print(f"  {key:18s} {result[key]:.4f}{interval}")
        print(f"  chance balanced accuracy {result['chance_balanced_accuracy']:.4f}")
        for cls, auc in result["auc"].items():
            print(f"  AUC {cls:40s} {auc:.4f}")
        print("  confusion matrix (rows: label, columns: predicted): " + ", ".join(result["classes"]))
        for row in result["confusion_matrix"]:
            print("    " + " ".join(f"{v:5d}" for v in row))
    return 0


def _add_runtime_argument(p: argparse.ArgumentParser) -> None:
    from .image_runtime_names import RUNTIMES

    p.add_argument("--runtime", choices=RUNTIMES, default="auto",
                   help="image tower on the CPU: PyTorch's eager one (the reference), a frozen and fused TorchScript "
                   "copy or an ONNX Runtime copy (faster, each built in about 2 s), or auto: from 256 images on, "
                   "ONNX Runtime where installed, else frozen (default)")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The full parser; given the command about to run, only that command's module is imported (the
    others, whose modules pull in plotting and Grad-CAM libraries, get a stub with their help line)."""
    parser = argparse.ArgumentParser(prog="visionclip", description="VisionCLIP: retina image-text model trained on synthetic data")
    parser.add_argument("--version", action="version", version=f"visionclip {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("predict", help="zero-shot probabilities for images and folders of images",
                       description="Zero-shot probabilities per image. A folder stands for its image files "
                       "(PNG, JPEG, TIFF, BMP, WebP, GIF, DICOM), sorted; DICOM files without an extension are "
                       "found by their header. Unreadable files are reported as errors and skipped. Exit status: "
                       "0 when at least one image was scored, 2 when none was (all unreadable, none found, or a "
                       "bad option).")
    p.add_argument("images", nargs="+", metavar="IMAGE_OR_DIR")
    p.add_argument("-r", "--recursive", action="store_true", help="also the image files in the folders' subfolders")
    p.add_argument("--prompts", default=None, help="prompt-set JSON or preset name (default: screening)")
    p.add_argument("--json", action="store_true", help="print one JSON object (results and a summary)")
    p.add_argument("--csv", metavar="FILE.csv", help="write one row per file: image, predicted, laterality, error, "
                   "then each class's probability")
    p.add_argument("--top", type=int, default=5, help="classes to print per image (text output)")
    p.add_argument("--batch-size", type=int, default=32, help="images decoded and encoded together")
    _add_runtime_argument(p)
    add_model_arguments(p)
    add_adapter_argument(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("eval", help="zero-shot metrics on a labelled folder",
                       description="Evaluate on DIR/labels.csv (path,label).")
    p.add_argument("--data", required=True, metavar="DIR")
    p.add_argument("--prompts", default=None, help="prompt-set JSON or preset name (default: screening)")
    p.add_argument("--all-classes", action="store_true", help="keep prompt-set classes absent from the labels")
    p.add_argument("--screening", action="store_true", help="the screening gauge instead: specificity, sensitivity "
                   "and AUC of P(abnormal), per condition too, with all the set's classes (needs 'normal' labels)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--plot", metavar="FILE.png", help="write the confusion matrix")
    p.add_argument("--predictions", metavar="FILE.csv", help="write each image's probabilities")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                   help="stratified bootstrap resamples for 95%% intervals of balanced accuracy and mean AUC (0: none)")
    p.add_argument("--batch-size", type=int, default=32)
    _add_runtime_argument(p)
    add_model_arguments(p)
    add_adapter_argument(p)
    p.set_defaults(func=cmd_eval)

    for name, (module, help_text) in EXTERNAL_COMMANDS.items():
        if command is not None and name != command:
            sub.add_parser(name, help=help_text, description=help_text)
            continue
        try:
            mod = importlib.import_module(module)
        except ImportError as e:  # an optional part not installed: the rest of the CLI still works
            logging.getLogger(__name__).debug("command %s unavailable: %s", name, e)
            continue
        p = sub.add_parser(name, help=help_text, description=help_text)
        mod.add_arguments(p)
        p.set_defaults(func=mod.run)
    return parser


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    print(f"visionclip: warning: {message}", file=file or sys.stderr)


def main(argv: list[str] | None = None) -> int:
    warnings.showwarning = _one_line_warning
    words = sys.argv[1:] if argv is None else argv
    parser = build_parser(command=next((w for w in words if not w.startswith("-")), ""))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="visionclip: %(message)s")
    try:
        return int(args.func(args) or 0)
    except VisionCLIPError as e:
        print(f"visionclip: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("visionclip: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
