"""The Prompt lab tab: compare one or two prompt sets on a labelled folder or a generated benchmark."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable

import gradio as gr
import numpy as np

from engine import PromptSet, VisionCLIPError, load_preset

from ..paths import resolve_under_root
from .common import AppContext, UserError, error_status, ok_status
from .prompt_table import prompt_set_from_table

EDITOR_CHOICE = "(prompt editor on the Analyse tab)"
NONE_CHOICE = "(none)"
LAB_BOOTSTRAP = 1000  # resamples for the prompt lab's 95% intervals
SYNTHETIC_RANGE = (4, 2000)


def make_synthetic_benchmark(ctx: AppContext, n: int, seed: int, prompt_sets: list[PromptSet] | None = None,
                             size: int = 256, progress: Callable | None = None) -> Path:
    """A balanced labelled folder (images/*.png + labels.csv path,label) from the engine's synthetic generator.

    Classes are the generator's screening conditions whose names are classes of every given prompt set;
    each image has exactly one condition.
    """
    from engine.synth import CONDITIONS, condition_class, write_benchmark  # imported on first use, not at start-up

    wanted = [c for c in CONDITIONS if all(ps.class_lookup(condition_class(c)) for ps in prompt_sets or [])]
    if len(wanted) < 2:
        raise UserError("The prompt sets share fewer than two of the generator's conditions "
                        f"({', '.join(condition_class(c) for c in CONDITIONS)}); use a folder instead.")
    out = Path(tempfile.mkdtemp(dir=ctx.work_dir, prefix="bench_")) / "set"

    def report(done, total):
        if progress and (done % 8 == 0 or done == total):
            progress(0.3 * done / total, desc=f"generating synthetic benchmark {done}/{total}")

    try:
        return write_benchmark(out, max(n, len(wanted)), seed=seed, size=size, conditions=wanted, progress=report)
    except VisionCLIPError as e:
        raise UserError(str(e)) from None


def _lab_prompt_set(choice: str | None, table: Any) -> PromptSet | None:
    if not choice or choice == NONE_CHOICE:
        return None
    if choice == EDITOR_CHOICE:
        return prompt_set_from_table(table)
    try:
        return load_preset(choice)
    except VisionCLIPError as e:
        raise UserError(str(e)) from None


def _metrics_md(name: str, r: dict, versus: dict | None = None) -> str:
    def f(x):
        return "n/a" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.3f}"

    def with_ci(key):
        ci = r.get("ci95", {}).get(key)
        return f(r.get(key)) + (f" (95% CI {ci[0]:.3f}-{ci[1]:.3f})" if ci else "")
    md = (f"#### {name}\n| metric | value |\n|---|---|\n| images | {r.get('n')} |\n"
          f"| accuracy | {f(r.get('accuracy'))} |\n| balanced accuracy | {with_ci('balanced_accuracy')} |\n"
          f"| macro F1 | {f(r.get('macro_f1'))} |\n| mean AUC | {with_ci('mean_auc')} |\n"
          f"| Cohen's kappa | {f(r.get('kappa'))} |\n")
    if versus:
        lo, hi = versus["ci95"]
        verdict = "better" if lo > 0 else "worse" if hi < 0 else "no clear difference"
        md += (f"| balanced accuracy, B - A (paired) | {versus['balanced_accuracy_difference']:+.3f} "
               f"(95% CI {lo:+.3f} to {hi:+.3f}: {verdict}) |\n")
    return md


def _lab_data(ctx: AppContext, source: str, folder: str, n_synth: Any, seed: Any, sets: list[PromptSet],
              progress: Callable | None) -> Path:
    """The labelled folder to evaluate on: the given one, or a freshly generated synthetic benchmark."""
    if source == "synthetic":
        try:
            n, sd = int(n_synth), int(seed)
        except (TypeError, ValueError):
            raise UserError("Number of images and seed must be whole numbers.") from None
        if not SYNTHETIC_RANGE[0] <= n <= SYNTHETIC_RANGE[1]:
            raise UserError(f"Synthetic benchmark size must be between {SYNTHETIC_RANGE[0]} and "
                            f"{SYNTHETIC_RANGE[1]} images.")
        if sd < 0:
            raise UserError("Seed must be a non-negative whole number.")
        return make_synthetic_benchmark(ctx, n, sd, sets, progress=progress)
    if source == "folder":
        if not folder or not str(folder).strip():
            raise UserError("Enter the path of a labelled folder (with labels.csv).")
        data_dir = resolve_under_root(ctx.data_root, folder)  # a ValueError, shown as one line, if outside it
        if not (data_dir / "labels.csv").is_file():
            raise UserError(f"No labels.csv in {str(folder).strip()!r} under the data root.")
        return data_dir
    raise UserError("Choose a data source.")


def run_prompt_lab(ctx: AppContext, source: str, folder: str, n_synth: Any, seed: Any, choice_a: str,
                   choice_b: str, table: Any, progress: Callable | None = None) -> tuple:
    """Evaluate one or two prompt sets; returns (metrics A md, fig A, metrics B md, fig B, status)."""
    from engine.evaluate import compare_results, embed_folder, evaluate, plot_confusion_matrix  # sklearn: seconds

    blank = (gr.update(), gr.update(), gr.update(), gr.update())
    try:
        ps_a = _lab_prompt_set(choice_a, table)
        if ps_a is None:
            raise UserError("Choose prompt set A.")
        ps_b = _lab_prompt_set(choice_b, table)
        sets = [("A", ps_a)] + ([("B", ps_b)] if ps_b is not None else [])
        data_dir = _lab_data(ctx, source, folder, n_synth, seed, [ps for _, ps in sets], progress)
    except (ValueError, VisionCLIPError) as e:  # UserError, and resolve_under_root's refusals
        return (*blank, error_status(e))

    def prog(done, total):
        if progress and total:
            progress(0.3 + 0.7 * done / total, desc=f"encoding images: {done}/{total}")
    try:
        with ctx.model_lock:  # the images are encoded once; each prompt set only re-scores them
            embedded = embed_folder(ctx.model, data_dir, progress=prog)
    except VisionCLIPError as e:
        return (*blank, error_status(e))
    outs, results = [], []
    for name, ps in sets:
        try:
            with ctx.model_lock:
                r = evaluate(ctx.model, embedded, prompt_set=ps, bootstrap=LAB_BOOTSTRAP)
        except VisionCLIPError as e:
            return (*blank, error_status(f"Prompt set {name}: {e}"))
        versus = compare_results(results[0], r, resamples=LAB_BOOTSTRAP) if results else None
        results.append(r)
        outs.append((_metrics_md(f"Prompt set {name} ({len(ps)} classes)", r, versus), plot_confusion_matrix(r)))
    if len(outs) == 1:
        outs.append(("", None))
    return (outs[0][0], outs[0][1], outs[1][0], outs[1][1],
            ok_status(f"Evaluated {len(sets)} prompt set(s) on {results[0]['n']} images."))
