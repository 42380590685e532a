"""Few-shot adapters in the app: build one from reviewed cases (Cases tab), pick one for an analysis
(Analyse tab), compare one against zero-shot on a labelled folder (Prompt lab).

Adapter files live in ``adapters/`` beside the case log, under neutral server-chosen names; users pick
them by name from a dropdown, never by path. The engine does the work (engine.adapt, engine.evaluate).
"""
from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import gradio as gr

from engine import VisionCLIPError
from engine.adapt import DEFAULT_METHOD, METHODS, Adapter, encode_for

from ..store import read_reviewed_cases
from .common import AppContext, UserError, error_status, md_text, ok_status
from .prompt_table import prompt_set_from_table

NO_ADAPTER = "(none: zero-shot)"
ADAPTER_SUFFIX = ".safetensors"


def adapters_dir(ctx: AppContext) -> Path:
    """The app's adapter folder, beside the case log."""
    return Path(ctx.store.path).parent / "adapters"


def adapter_choices(ctx: AppContext) -> list[str]:
    """The selector's choices: "none" first (the default), then the adapter files, newest first."""
    d = adapters_dir(ctx)
    files = sorted(d.glob(f"*{ADAPTER_SUFFIX}"), key=lambda p: (-p.stat().st_mtime, p.name)) if d.is_dir() else []
    return [NO_ADAPTER, *(p.name for p in files)]


def adapter_path(ctx: AppContext, choice: str | None) -> Path | None:
    """The file of a selector choice, or None for zero-shot; UserError for a name not in the folder."""
    if not choice or choice == NO_ADAPTER:
        return None
    name = str(choice)
    if Path(name).name != name or not name.endswith(ADAPTER_SUFFIX):  # a name from the dropdown, not a path
        raise UserError(f"Unknown adapter {name!r}; pick one from the list.")
    path = adapters_dir(ctx) / name
    if not path.is_file():
        raise UserError(f"Adapter {name!r} is no longer in the adapter folder; refresh the list.")
    return path


def load_adapter(ctx: AppContext, choice: str | None) -> tuple[Adapter | None, dict | None]:
    """(adapter, record for the case log) of a selector choice; (None, None) for zero-shot.

    A damaged file or one fitted on another model raises UserError (one line)."""
    path = adapter_path(ctx, choice)
    if path is None:
        return None, None
    try:
        adapter = Adapter.load(path, ctx.model)
    except VisionCLIPError as e:
        raise UserError(f"Adapter not usable: {e}") from None
    record = {"file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "method": adapter.method,
              "images_per_class": adapter.images_per_class, "created_at": adapter.created_at}
    return adapter, record


def describe_adapter(ctx: AppContext, choice: str | None) -> str:
    """One line on the selected adapter (shown under the selector)."""
    try:
        adapter, _ = load_adapter(ctx, choice)
    except UserError as e:
        return error_status(e)
    if adapter is None:
        return "Zero-shot: the prompt editor's prompts."
    counts = ", ".join(f"{md_text(c)} {n}" for c, n in adapter.images_per_class.items())
    return (f"{adapter.method} adapter fitted on {sum(adapter.images_per_class.values())} real images ({counts}); "
            f"it uses its own prompt set, not the editor's.")


# ------------------------------------------------------------------------------ Cases tab: build
def _reviewed(ctx: AppContext, reviewer: str | None):
    try:
        return read_reviewed_cases(ctx.store.path, (reviewer or "").strip() or None)
    except VisionCLIPError as e:
        raise UserError(str(e)) from None


def reviewed_counts(ctx: AppContext, reviewer: str | None = None) -> tuple[dict[str, int], str]:
    """({label: cases}, status): what a build would learn from, before building."""
    try:
        cases = _reviewed(ctx, reviewer)
    except UserError as e:
        return {}, error_status(e)
    counts = dict(sorted(Counter(c.label for c in cases).items()))
    return counts, ok_status(f"{len(cases)} reviewed case(s) to learn from: "
                             + ", ".join(f"{md_text(label)} {n}" for label, n in counts.items()) + ".")


def _neutral_name(ctx: AppContext, method: str) -> Path:
    d = adapters_dir(ctx)
    d.mkdir(parents=True, exist_ok=True)
    stem = f"adapter_{time.strftime('%Y%m%d_%H%M%S', time.gmtime())}_{method}"
    path, n = d / f"{stem}{ADAPTER_SUFFIX}", 2
    while path.exists():
        path, n = d / f"{stem}_{n}{ADAPTER_SUFFIX}", n + 1
    return path


def build_adapter_from_cases(ctx: AppContext, table: Any, reviewer: str | None = None,
                             method: str = DEFAULT_METHOD) -> tuple[str, Any]:
    """Fit an adapter on the agreed or corrected, gradable reviewed cases with the editor's prompt set;
    returns (status, selector update). Classes without a reviewed example are left out (and named)."""
    try:
        if method not in METHODS:
            raise UserError(f"Unknown adapter method {method!r}; choose one of {', '.join(METHODS)}.")
        ps = prompt_set_from_table(table)
        cases = _reviewed(ctx, reviewer)
        known = [c for c in cases if ps.class_lookup(c.label) is not None]
        unknown = sorted({c.label for c in cases} - {c.label for c in known})
        labels = [ps.class_lookup(c.label) for c in known]
        present = [c for c in ps.classes if c in set(labels)]
        missing = [c for c in ps.classes if c not in set(labels)]
        if len(present) < 2:
            raise UserError("An adapter needs reviewed examples of two or more classes of the prompt set; "
                            f"classes with none: {', '.join(missing) or '-'}"
                            + (f"; labels not in the prompt set: {', '.join(unknown)}" if unknown else "") + ".")
    except UserError as e:
        return error_status(e), gr.update()
    provenance = {"source": "cases", "database": Path(ctx.store.path).name, "case_ids": [c.case_id for c in known]}
    if reviewer and reviewer.strip():
        provenance["reviewer"] = " ".join(reviewer.split())
    try:
        with ctx.model_lock:
            embeddings = encode_for(ctx.model, [c.image for c in known], method)
            adapter = Adapter.fit(ctx.model, embeddings, labels, ps.subset(set(present)), method=method,
                                  provenance=provenance)
        path = adapter.save(_neutral_name(ctx, adapter.method))
    except (VisionCLIPError, OSError) as e:
        return error_status(f"Could not build the adapter: {e}"), gr.update()
    counts = ", ".join(f"{md_text(c)} {n}" for c, n in adapter.images_per_class.items())
    notes = [f"{adapter.method} adapter {path.name} fitted on {len(known)} reviewed case(s): {counts}",
             "(their stored thumbnails; the originals are not kept)."]
    if missing:
        notes.append(f"Left out (no reviewed example): {md_text(', '.join(missing))}.")
    if unknown:
        notes.append(f"Cases with labels not in the prompt set left out: {md_text(', '.join(unknown))}.")
    return ok_status(" ".join(notes)), gr.update(choices=adapter_choices(ctx), value=path.name)


# ------------------------------------------------------------------------------ Analyse tab
def comparison_rows(state) -> list[list]:
    """[class, zero-shot, adapted] per class, best adapted first; empty for a zero-shot analysis."""
    if state is None or state.zero_shot is None:
        return []
    adapted = state.probabilities
    return [[c, round(state.zero_shot.get(c, float("nan")), 4), round(p, 4)]
            for c, p in sorted(adapted.items(), key=lambda kv: -kv[1])]


COMPARISON_COLUMNS = ["class", "zero-shot", "adapted"]


# ------------------------------------------------------------------------------ Prompt lab
def run_adapter_lab(ctx: AppContext, folder: str, choice: str | None, resamples: int = 1000,
                    progress: Callable | None = None) -> tuple:
    """Zero-shot against an adapter on a labelled folder under the data root, over the adapter's classes,
    with a paired interval of the difference; returns (md zero-shot, fig, md adapted, fig, status)."""
    from engine.evaluate import compare_results, embed_folder, evaluate, plot_confusion_matrix  # sklearn: seconds

    from .prompt_lab import _lab_data, _metrics_md

    blank = (gr.update(),) * 4
    try:
        adapter, _ = load_adapter(ctx, choice)
        if adapter is None:
            raise UserError("Choose an adapter to compare against zero-shot.")
        data_dir = _lab_data(ctx, "folder", folder, None, None, [], progress)
    except (ValueError, VisionCLIPError) as e:  # UserError, and resolve_under_root's refusals
        return (*blank, error_status(e))

    def prog(done, total):
        if progress and total:
            progress(done / total, desc=f"encoding images: {done}/{total}")
    try:
        with ctx.model_lock:
            embedded = embed_folder(ctx.model, data_dir, progress=prog)
            zero = evaluate(ctx.model, embedded, prompt_set=adapter.prompt_set, all_classes=True, bootstrap=resamples)
            adapted = evaluate(ctx.model, embedded, adapter=adapter, bootstrap=resamples)
    except VisionCLIPError as e:
        return (*blank, error_status(e))
    versus = compare_results(zero, adapted, resamples=resamples)
    name = Path(choice).name
    return (_metrics_md(f"A: zero-shot ({len(adapter.classes)} classes of the adapter)", zero),
            plot_confusion_matrix(zero),
            _metrics_md(f"B: {adapter.method} adapter {name}", adapted, versus), plot_confusion_matrix(adapted),
            ok_status(f"Zero-shot and adapter {name} on {zero['n']} images; the paired interval is B - A."))


def adapter_json(record: dict | None, zero_shot: dict | None) -> str | None:
    """What the case log keeps about the adapter of an analysis (no image, no patient data)."""
    if record is None:
        return None
    return json.dumps({**record, "zero_shot_probabilities": zero_shot}, sort_keys=True)
