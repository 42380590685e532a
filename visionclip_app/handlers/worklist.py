"""The Worklist tab: a queue of photographs (a server folder under --data-root, or many uploads) reviewed one
by one with the keyboard, analysed in batches, double-read if asked, exported with every reading."""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable

import gradio as gr
import pandas as pd
import torch

from engine import PromptSet
from engine.adapt import class_probabilities
from engine.batch import prepare_inputs
from engine.screening import hierarchical_prediction, screen

from ..paths import resolve_under_root
from ..store import ITEM_STATES, Analysis, CaseRecord, Review, StoreError
from .analyse import analyse
from .common import AppContext, CurrentAnalysis, UserError, error_status, ok_status
from .prompt_table import prompt_set_from_table

WORKLIST_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".dcm", ".dicom")
MAX_WORKLIST_ITEMS = 5000
BATCH_SIZE = 16
RESULT_COLUMNS = ["#", "image", "state", "readings", "predicted", "probability", "scoring"]
ANY = "any"
log = logging.getLogger(__name__)


def worklist_choices(ctx: AppContext) -> list[tuple[str, int]]:
    return [(f"#{w['id']} {w['name']}" + (" (double reading)" if w["readings"] > 1 else ""), w["id"])
            for w in ctx.store.worklists()]


def _worklist_id(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise UserError("Choose a worklist first.") from None


def _images_in(folder: Path, recursive: bool) -> list[Path]:
    pattern = "**/*" if recursive else "*"
    found = sorted(p for p in folder.glob(pattern) if p.suffix.lower() in WORKLIST_SUFFIXES and p.is_file())
    if not found:
        raise UserError(f"No images ({', '.join(WORKLIST_SUFFIXES)}) in that folder.")
    if len(found) > MAX_WORKLIST_ITEMS:
        raise UserError(f"The folder has {len(found)} images; a worklist holds {MAX_WORKLIST_ITEMS} at most.")
    return found


def _upload_folder(ctx: AppContext) -> Path:
    """Where uploaded worklist images are kept beside the case log, under neutral names, so a worklist outlives
    the session and the app's temporary folder."""
    d = ctx.store.path.resolve().parent / f"{ctx.store.path.stem}_worklist_files" / uuid.uuid4().hex[:12]
    d.mkdir(parents=True, exist_ok=False)
    return d


def create_worklist(ctx: AppContext, name: str, folder: str, uploads: list | None, readings: Any,
                    recursive: bool = False) -> tuple[Any, str]:
    """A worklist from a folder under the data root, or from uploaded files; returns (worklist dropdown, status)."""
    try:
        readings = int(readings or 1)
        if uploads:
            files = [Path(getattr(f, "name", f)) for f in uploads]
            files = [f for f in files if f.suffix.lower() in WORKLIST_SUFFIXES]
            if not files:
                raise UserError("None of the uploaded files is an image.")
            if len(files) > MAX_WORKLIST_ITEMS:
                raise UserError(f"A worklist holds {MAX_WORKLIST_ITEMS} images at most.")
            dest = _upload_folder(ctx)
            paths = []
            for i, f in enumerate(files, start=1):
                paths.append(dest / f"{i:05d}{f.suffix.lower()}")
                shutil.copyfile(f, paths[-1])
            source = "upload"
        elif folder and str(folder).strip():
            root = resolve_under_root(ctx.data_root, folder)
            if not root.is_dir():
                raise UserError("No such folder under the data root.")
            paths, source = _images_in(root, bool(recursive)), "folder"
        else:
            raise UserError("Upload images or enter a folder under the data root.")
        wid = ctx.store.create_worklist(name, paths, readings=readings, source=source)
    except (UserError, StoreError, ValueError, OSError) as e:  # resolve_under_root refuses with a ValueError
        return gr.update(), error_status(e)
    return (gr.update(choices=worklist_choices(ctx), value=wid),
            ok_status(f"Worklist #{wid} created with {len(paths)} image(s)."))


def progress_markdown(ctx: AppContext, worklist_id: int) -> str:
    p = ctx.store.worklist_progress(worklist_id)
    wl = ctx.store.worklist(worklist_id)
    md = (f"**{p['reviewed']} of {p['total']} reviewed** · {p['analysed']} analysed, {p['pending']} pending, "
          f"{p['skipped']} skipped")
    if wl["readings"] > 1:
        ag = ctx.store.reader_agreement(worklist_id)
        kappa = "n/a" if ag["kappa"] is None else f"{ag['kappa']:.2f}"
        md += f" · double reading: inter-reader Cohen's kappa **{kappa}** over {ag['n']} image(s)"
    return md


def item_markdown(ctx: AppContext, worklist_id: int, item: dict) -> str:
    """Where the reviewer is; other readers' verdicts are not shown (independent double reading)."""
    wl = ctx.store.worklist(worklist_id)
    total = ctx.store.worklist_progress(worklist_id)["total"]
    return (f"Image **{item['position']} of {total}** · {item['state']} · readings {len(item['readers'])}"
            f" of {wl['readings']}")


def start_position(ctx: AppContext, worklist_id: int, reviewer: str | None) -> int:
    """Resume: the first image this reviewer has not read (the first not reviewed without a name), else 1."""
    reviewer = " ".join(str(reviewer or "").split()) or None
    open_items = [it for it in ctx.store.worklist_items(worklist_id, reviewer=reviewer)
                  if it["state"] not in ("reviewed", "skipped")]
    return open_items[0]["position"] if open_items else 1


def step(ctx: AppContext, worklist_id: Any, position: Any, move: str, reviewer: str | None = None) -> int:
    """The position after ``move``: "next", "previous" or "next unreviewed" (not read by ``reviewer``)."""
    wid = _worklist_id(worklist_id)
    total = ctx.store.worklist_progress(wid)["total"]
    pos = int(position or 0)
    if move == "next":
        return min(pos + 1, total)
    if move == "previous":
        return max(pos - 1, 1)
    if move == "next unreviewed":
        name = " ".join(str(reviewer or "").split()) or None
        open_items = [it["position"] for it in ctx.store.worklist_items(wid, reviewer=name)
                      if it["state"] not in ("reviewed", "skipped")]
        later = [p for p in open_items if p > pos] or open_items
        return later[0] if later else pos
    raise UserError(f"Unknown move {move!r}.")


def open_item(ctx: AppContext, worklist_id: Any, position: Any, table: Any, method: str, opacity: float,
              target: str, previous: CurrentAnalysis | None = None) -> tuple:
    """Analyse one item; returns (status, probabilities, overlay, item md, progress md, position, state)."""
    try:
        wid = _worklist_id(worklist_id)
        item = ctx.store.worklist_item(wid, int(position))
    except (UserError, StoreError, TypeError, ValueError) as e:
        return error_status(e), None, None, "", "", gr.update(), None
    status, probs, _, overlay, _, _, state = analyse(ctx, item["image_path"], table, method, opacity, None, target,
                                                     False, previous)
    if state is not None:
        ctx.store.set_item_analysis(item["id"], state.analysis)
        item = ctx.store.worklist_item(wid, item["position"])
    return (status, probs, overlay, item_markdown(ctx, wid, item), progress_markdown(ctx, wid), item["position"],
            state)


def save_reading(ctx: AppContext, worklist_id: Any, position: Any, state: CurrentAnalysis | None, reviewer: str,
                 verdict: str, corrected: Any, confidence: Any = None, notes: str = "") -> tuple[str, str]:
    """Log this reviewer's reading of the current item; returns (status, progress md)."""
    try:
        wid = _worklist_id(worklist_id)
        item = ctx.store.worklist_item(wid, int(position))
        if not isinstance(state, CurrentAnalysis) or state.analysis.image_sha256 != item["image_sha256"]:
            raise UserError("Open the image first (its analysis is not on screen).")
        review = Review(reviewer=reviewer, verdict=verdict, corrected_labels=corrected, confidence=confidence,
                        notes=notes)
        case_id = ctx.store.log_reading(item["id"], CaseRecord(state.analysis, review))
    except (UserError, StoreError, TypeError, ValueError) as e:
        return error_status(e), gr.update()
    return ok_status(f"Image {item['position']}: {verdict} saved as case #{case_id}."), progress_markdown(ctx, wid)


def skip_item(ctx: AppContext, worklist_id: Any, position: Any) -> tuple[str, str]:
    try:
        wid = _worklist_id(worklist_id)
        ctx.store.skip_item(ctx.store.worklist_item(wid, int(position))["id"])
    except (UserError, StoreError, TypeError, ValueError) as e:
        return error_status(e), gr.update()
    return ok_status(f"Image {position} skipped."), progress_markdown(ctx, wid)


def analyse_worklist(ctx: AppContext, worklist_id: Any, table: Any, progress: Callable | None = None) -> str:
    """Classify every not-yet-analysed item in batches; unreadable files are counted and left pending.
    Each image is scored on its own (the screening decision, then the condition), stored as it goes."""
    try:
        wid = _worklist_id(worklist_id)
        ps = prompt_set_from_table(table)
    except UserError as e:
        return error_status(e)
    todo = [it for it in ctx.store.worklist_items(wid) if it["state"] == "pending"]
    failed, done = [], 0
    with ctx.model_lock:  # a long run gets the model's faster image runtime, as `visionclip predict` does
        tower = ctx.model.image_tower_for(len(todo))
    for start in range(0, len(todo), BATCH_SIZE):
        done += _store_scored(ctx, _encode_batch(ctx, todo[start:start + BATCH_SIZE], failed, tower), ps)
        if progress:  # an interrupted run keeps what it stored
            progress(min(start + BATCH_SIZE, len(todo)) / max(len(todo), 1), desc=f"analysed {done} of {len(todo)}")
    msg = f"Analysed {done} image(s) with {len(ps)} classes."
    if failed:
        msg += f" {len(failed)} could not be read and stay pending: " + ", ".join(failed[:5])
    return ok_status(msg) if done or not failed else error_status(msg)


def _store_scored(ctx: AppContext, encoded: list[tuple], ps: PromptSet) -> int:
    """Score ``encoded`` (from :func:`_encode_batch`) and store each item's analysis."""
    if not encoded:
        return 0
    embeddings = torch.cat([emb for _, _, emb in encoded])
    with ctx.model_lock:
        probs = class_probabilities(ctx.model, embeddings, ps)
        predicted = hierarchical_prediction(probs.numpy(), ps.classes, screen(ctx.model, embeddings, ps, probs))
    for (item, sha, _), row, label in zip(encoded, probs, predicted):
        ctx.store.set_item_analysis(item["id"], _analysis(ctx, ps, sha, row, label))
    return len(encoded)


def _encode_batch(ctx: AppContext, batch: list[dict], failed: list[str], tower=None) -> list[tuple]:
    """(item, image SHA-256, (1, D) embedding) for each readable item of ``batch``; images are decoded
    and preprocessed on the engine's threads, outside the model lock."""
    blobs = []
    for item in batch:
        try:
            blobs.append(Path(item["image_path"]).read_bytes())
        except OSError:
            blobs.append(None)
    prepared = iter(prepare_inputs(ctx.model, [b for b in blobs if b is not None]))
    readable, tensors = [], []
    for item, data in zip(batch, blobs):
        ready = next(prepared) if data is not None else None
        if ready is None or ready.error:
            failed.append(f"#{item['position']}")
            continue
        readable.append((item, hashlib.sha256(data).hexdigest()))
        tensors.append(ready.tensor)
    if not tensors:
        return []
    with ctx.model_lock:
        embeddings = ctx.model.encode_tensors(tensors, tower)
    return [(item, sha, emb[None]) for (item, sha), emb in zip(readable, embeddings)]


def _analysis(ctx: AppContext, ps: PromptSet, sha: str, row, predicted: str) -> Analysis:
    p = dict(zip(ps.classes, map(float, row)))
    return Analysis(image_sha256=sha, thumbnail=b"", prompt_set_json=json.dumps(ps.to_dict()),
                    prompt_set_sha256=ps.sha256, probabilities=p, model_id=ctx.model.model_id,
                    predicted_label=predicted)


def _scoring(item: dict) -> str:
    if not item["probabilities"]:
        return ""
    if not item.get("calibration"):
        return "per image"
    cal = json.loads(item["calibration"])  # batches calibrated together by an earlier version
    return f"transductive {cal['transductive']} ({cal['images']} images)"


def results_table(ctx: AppContext, worklist_id: Any, predicted: str | None = ANY, state: str | None = ANY
                  ) -> tuple[Any, Any, str]:
    """(results DataFrame, predicted-class filter choices, status): e.g. predicted glaucoma, not yet reviewed."""
    try:
        wid = _worklist_id(worklist_id)
        if state not in (None, "", ANY, *ITEM_STATES):
            raise UserError(f"Unknown state {state!r}.")
        items = ctx.store.worklist_items(wid)
    except (UserError, StoreError) as e:
        return gr.update(), gr.update(), error_status(e)
    classes = sorted({it["predicted_label"] for it in items if it["predicted_label"]})
    rows = [it for it in items if (predicted in (None, "", ANY) or it["predicted_label"] == predicted)
            and (state in (None, "", ANY) or it["state"] == state)]
    df = pd.DataFrame([[it["position"], Path(it["image_path"]).name, it["state"], len(it["readers"]),
                        it["predicted_label"] or "",
                        round(max(json.loads(it["probabilities"]).values()), 4) if it["probabilities"] else None,
                        _scoring(it)]
                       for it in rows], columns=RESULT_COLUMNS)
    return df, gr.update(choices=[ANY, *classes]), ok_status(f"{len(rows)} of {len(items)} image(s) shown.")


def export_worklist(ctx: AppContext, worklist_id: Any, fmt: str) -> tuple[str | None, str]:
    try:
        wid = _worklist_id(worklist_id)
        path = ctx.store.export_worklist(wid, ctx.new_file(f".{fmt}"), fmt)
    except (UserError, StoreError) as e:
        return None, error_status(e)
    return str(path), ok_status(f"Exported worklist #{wid} as {str(fmt).upper()}.")
