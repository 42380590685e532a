"""The Analyse tab: classify an upload with the editor's prompts, show the saliency map and quality screen."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr
from PIL import Image

from engine import PromptSet, VisionCLIPError, assess_quality, load_image_with_meta, load_preset
from engine.saliency_names import DEFAULT_METHOD, DETAIL, DETAIL_METHODS, SLOW_METHODS
from engine.screening import Screening, hierarchical_prediction, screen
from engine.saliency_names import METHOD_NAMES as SALIENCY_METHODS
from engine.saliency_names import TARGETS as SALIENCY_TARGETS

from ..store import Analysis, strip_and_thumbnail
from ..uploads import NEUTRAL_RE
from .common import AppContext, CurrentAnalysis, UserError, error_status, md_text, ok_status, one_line
from .prompt_table import default_preset, prompt_set_from_table
from .adapters import adapter_json, load_adapter

if TYPE_CHECKING:
    from engine.saliency import MapLocation

log = logging.getLogger(__name__)

QUALITY_OK_MD = "Image quality: no problems found by the automatic screen."
STATUS_CHARS = 290  # common.one_line cuts a status at 300 characters; room for its mark


def saliency_methods() -> list[str]:
    return [m for m in SALIENCY_METHODS if m not in SLOW_METHODS]  # slow ones take minutes on a CPU


def method_for_detail(detail: bool, method: str) -> str:
    """The method to show when lesion-level detail is switched: Grad-CAM's channel-pooled weights wash out
    on the fine layer, the element-wise product stays sharp there (docs/saliency.md)."""
    if detail:
        return method if method in DETAIL_METHODS else DETAIL_METHODS[0]
    return saliency_methods()[0] if method in DETAIL_METHODS else method


def quality_markdown(quality: dict) -> str:
    if quality["gradable"]:
        return QUALITY_OK_MD
    return ("### ⚠ This image looks ungradable\n" + "\n".join(f"- {r}" for r in quality["reasons"])
            + "\n\nResults on ungradable images are unreliable.")


LATERALITY = {"R": "right eye", "L": "left eye", "B": "both eyes"}


def _read_upload(ctx: AppContext, image_path: str | None) -> tuple[bytes, Image.Image, dict]:
    """(file bytes, RGB image, what a DICOM file says about the eye: laterality, never patient attributes)."""
    if not image_path:
        raise UserError("Upload a fundus photograph first (drag and drop, paste, or pick an example).")
    p = Path(image_path)
    try:
        size = p.stat().st_size
    except OSError:
        raise UserError("The uploaded file could not be read; upload it again.") from None
    if size == 0:
        raise UserError("The uploaded file is empty (0 bytes).")
    if size > ctx.max_upload_mb * 1024 * 1024:
        raise UserError(f"The file is {size / 2**20:.1f} MB; the limit is {ctx.max_upload_mb:g} MB.")
    data = p.read_bytes()
    try:
        image, meta = load_image_with_meta(data)
    except VisionCLIPError as e:
        msg = str(e)
        msg = msg[len("image: "):] if msg.startswith("image: ") else msg
        raise UserError(f"Not a usable image: {msg}") from None
    return data, image, meta


def _original_name(ctx: AppContext, image_path: str | None) -> str | None:
    """The browser's file name (kept in memory only; stored in the case log only on opt-in)."""
    if not image_path:
        return None
    name = Path(image_path).name
    if NEUTRAL_RE.match(name):  # renamed on upload by uploads.NeutralUploadNames
        return ctx.upload_names.original_name(name)
    return name


def _detail_flag(detail: Any) -> bool:
    if detail is None or isinstance(detail, bool):
        return bool(detail)
    raise UserError(f"Lesion-level detail must be on or off, not {detail!r}.")


def _saliency_options(method: Any, opacity: Any, target: Any, detail: Any) -> tuple[str, float, str, bool]:
    """The saliency form values, checked; UserError names the first bad one."""
    try:
        opacity = float(opacity)
    except (TypeError, ValueError):
        raise UserError("Opacity must be a number between 0 and 1.") from None
    if not 0.0 <= opacity <= 1.0:
        raise UserError("Opacity must be between 0 and 1.")
    if method not in saliency_methods():
        raise UserError(f"Unknown saliency method {method!r}.")
    if target not in SALIENCY_TARGETS:
        raise UserError(f"Unknown saliency target {target!r}; choose {' or '.join(SALIENCY_TARGETS)}.")
    return method, opacity, target, _detail_flag(detail)


def _saliency(ctx: AppContext, image: Image.Image, ps: PromptSet, class_name: str, method: str,
              opacity: float, target: str = SALIENCY_TARGETS[0], detail: bool = False, adapter=None,
              eye_side: str | None = None) -> tuple[Image.Image | None, str, str | None, MapLocation | None]:
    """Returns (overlay, method used, target used, where the map points); (None, message, None, None) when
    saliency is unavailable. With an adapter the map explains the adapted probability (target "adapter")."""
    from engine.saliency import describe_map, explain  # here: pytorch-grad-cam takes seconds to import

    try:
        with ctx.model_lock:
            res = explain(ctx.model, image, ps, class_name, method=method or DEFAULT_METHOD, target=target,
                          opacity=float(opacity), layers=DETAIL if detail else None, adapter=adapter)
    except VisionCLIPError as e:
        return None, one_line(e), None, None
    try:
        where = describe_map(res.map, image, eye_side) if res.map.max() > 0 else None
    except VisionCLIPError:
        where = None  # the overlay stands without its caption
    return res.overlay, f"{res.method} ({DETAIL})" if detail else res.method, res.target, where


def _with_where(notes: list[str], where: MapLocation | None) -> list[str]:
    """The notes and the "where" line, shortened or left out so that the one-line status is not cut."""
    room = STATUS_CHARS - len(" ".join(notes)) - 1
    fits = [t for t in ((where.text, where.short) if where is not None else ()) if len(t) <= room]
    return [*notes, fits[0]] if fits else notes


def saliency_class_for(previous: CurrentAnalysis | None, image_sha256: str, requested: str | None,
                       probabilities: dict[str, float], predicted: str | None = None) -> str:
    """The class to explain: the reviewer's choice while they work on the same image (a prompt edit keeps it),
    the new prediction (top-1 unless given) when the image changed."""
    predicted = predicted or max(probabilities, key=probabilities.get)
    same_image = previous is None or previous.analysis.image_sha256 == image_sha256
    return requested if same_image and requested in probabilities else predicted


def _score(ctx: AppContext, image: Image.Image, ps: PromptSet, adapter=None
           ) -> tuple[dict[str, float], list[tuple], int, dict[str, float] | None, Screening | None]:
    """(class probabilities, (class, subclass, probability) per scored group, prompts the text tower truncated,
    zero-shot probabilities when ``adapter`` gave the first ones, else None, and the zero-shot screening
    decision when the set has a normal class and no adapter is used, else None)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with ctx.model_lock:
            # an adapter reads its own features (clap-stage: [embedding | stage features]); zero-shot the embedding
            features = adapter.encode(ctx.model, [image]) if adapter is not None else ctx.model.encode_images([image])
            embedding = features[:, :adapter.head.anchor.embeddings.shape[1]] if adapter is not None else features
            class_probs, sub_probs = ctx.model.class_and_subclass_probabilities(embedding, ps)
            adapted = adapter.probabilities(features)[0] if adapter is not None else None
            screening = screen(ctx.model, embedding, ps, class_probs) if adapter is None else None
    probs = dict(zip(ps.classes, map(float, class_probs[0])))
    subs = [(c, sub, float(p)) for (c, sub, _), p in zip(ps.scored_groups(), sub_probs[0])]
    n_truncated = sum("truncated" in str(w.message) for w in caught)
    if adapted is None:
        return probs, subs, n_truncated, None, screening
    return dict(zip(adapter.classes, map(float, adapted))), subs, n_truncated, probs, None


def screening_headline(screening: Screening | None, predicted: str, probs: dict[str, float]) -> str:
    """The answer the Analyse tab leads with: normal or a finding with P(abnormal), then which condition."""
    if screening is None:
        return f"Predicted **{md_text(predicted)}** ({probs[predicted]:.1%})."
    how = (f"threshold {screening.threshold:.1%}, fixed on healthy synthetic renders" if screening.threshold is not None
           else "top-1: no threshold calibrated for this model")
    if not screening.finding[0]:
        return f"Screening: **NORMAL** (P(abnormal) {screening.p_abnormal[0]:.1%}; {how})."
    return (f"Screening: **FINDING** (P(abnormal) {screening.p_abnormal[0]:.1%}; {how}); most probable condition "
            f"**{md_text(predicted)}** ({probs[predicted]:.1%}).")


def analyse(ctx: AppContext, image_path: str | None, table: Any, method: str, opacity: float,
            saliency_class: str | None = None, target: str = SALIENCY_TARGETS[0], detail: bool = False,
            previous: CurrentAnalysis | None = None, adapter_choice: str | None = None) -> tuple:
    """Classify the upload with the editor's prompts, or with a few-shot adapter (``adapter_choice``, a file
    of the app's adapter folder; it carries its own prompt set); returns
    (status, label_dict, original, overlay, quality_md, class_dropdown_update, CurrentAnalysis or None).

    ``previous`` is the session's last analysis: on the same image the requested saliency class is kept.
    With an adapter the probabilities, the prediction and the saliency are the adapted ones; the zero-shot
    probabilities over the same classes are kept beside them (``CurrentAnalysis.zero_shot``)."""
    empty = (None, None, None, "", gr.update(), None)
    try:
        method, opacity, target, detail = _saliency_options(method, opacity, target, detail)
        adapter, adapter_record = load_adapter(ctx, adapter_choice)
        ps = adapter.prompt_set if adapter is not None else prompt_set_from_table(table)
        data, image, meta = _read_upload(ctx, image_path)
    except UserError as e:
        return (error_status(e), *empty)
    t0 = time.perf_counter()
    try:
        probs, sub_probs, n_truncated, zero_shot, screening = _score(ctx, image, ps, adapter)
    except VisionCLIPError as e:
        return (error_status(e), *empty)
    predicted = hierarchical_prediction([list(probs.values())], list(probs), screening)[0]
    sha = hashlib.sha256(data).hexdigest()
    cls = saliency_class_for(previous, sha, saliency_class, probs, predicted)
    overlay, used, used_target, where = _saliency(ctx, image, ps, cls, method, opacity, target, detail, adapter,
                                                  meta.get("laterality"))
    quality = assess_quality(image)
    elapsed = time.perf_counter() - t0
    record = Analysis(
        image_sha256=sha, thumbnail=strip_and_thumbnail(image), original_filename=_original_name(ctx, image_path),
        prompt_set_json=json.dumps(ps.to_dict(), ensure_ascii=False), prompt_set_sha256=ps.sha256,
        probabilities=probs, predicted_label=predicted, model_id=ctx.model.model_id,
        saliency_method=used if overlay is not None else None, saliency_target=used_target,
        saliency_class=cls if overlay is not None else None,
        saliency_thumbnail=strip_and_thumbnail(overlay) if overlay is not None else None,
        adapter=adapter_json(adapter_record, zero_shot))
    headline = screening_headline(screening, predicted, probs)
    state = CurrentAnalysis(analysis=record, image=image, prompt_set=ps, quality=quality,
                            screening=headline if screening is not None else "")
    notes = [headline,
             f"{len(ps)} classes in {elapsed:.2f} s · model `{ctx.model.model_id}`."]
    if zero_shot is not None:  # short: one_line keeps 300 characters
        state = dataclasses.replace(state, adapter=adapter, zero_shot=zero_shot, adapter_name=adapter_record["file"])
        zs_top = max(zero_shot, key=zero_shot.get)
        notes = [f"**Adapted** by `{md_text(adapter_record['file'])}` (its own prompts; the map explains the adapted"
                 f" score): **{md_text(predicted)}** ({probs[predicted]:.1%}); zero-shot: {md_text(zs_top)}"
                 f" ({zero_shot[zs_top]:.1%}). {elapsed:.2f} s · model `{ctx.model.model_id}`."]
    if meta.get("laterality") in LATERALITY:
        notes.append(f"DICOM laterality: {LATERALITY[meta['laterality']]}.")
    if zero_shot is None and len(ps.subclasses(predicted)) > 1:  # what a grouped class's score is made of
        parts = sorted(((p, sub) for c, sub, p in sub_probs if c == predicted), reverse=True)
        notes.append(f"{md_text(predicted)} is the sum of: " + ", ".join(f"{md_text(sub)} {p:.1%}" for p, sub in parts) + ".")
    if overlay is None:
        notes.append(f"No saliency map: {used}.")
    if n_truncated:
        notes.append(f"{n_truncated} prompt(s) were longer than the text tower reads and were truncated.")
    if not quality["gradable"]:
        notes.append("The image looks ungradable.")
    notes = _with_where(notes, where)
    return (ok_status(" ".join(notes)), probs, image, overlay, quality_markdown(quality),
            gr.update(choices=list(probs), value=cls), state)


def update_saliency(ctx: AppContext, state: CurrentAnalysis | None, class_name: str, method: str, opacity: float,
                    target: str = SALIENCY_TARGETS[0], detail: bool = False) -> tuple:
    """Recompute the overlay for another class/method/opacity/target/detail; returns (overlay, status, state)."""
    if not state:
        return None, error_status("Analyse an image first."), state
    if class_name not in state.probabilities:
        return gr.update(), error_status(f"Unknown class {class_name!r}."), state
    try:
        method, opacity, target, detail = _saliency_options(method, opacity, target, detail)
    except UserError as e:
        return gr.update(), error_status(e), state
    overlay, used, used_target, where = _saliency(ctx, state.image, state.prompt_set, class_name, method, opacity,
                                                  target, detail, state.adapter)
    if overlay is None:
        return None, error_status(f"No saliency map: {used}."), state
    state = state.with_saliency(used, used_target, class_name, strip_and_thumbnail(overlay))
    notes = _with_where([f"Saliency ({used}, {used_target}) for '{md_text(class_name)}'."], where)
    return overlay, ok_status(" ".join(notes)), state


def _analysis_summary(state: CurrentAnalysis | None) -> str:
    """One line on the Review tab describing what a saved review will be attached to."""
    if not state:
        return "_No analysis yet: analyse an image first._"
    a = state.analysis
    top = sorted(a.probabilities.items(), key=lambda kv: -kv[1])[:3]
    warn = "" if state.quality["gradable"] else " · ⚠ looks ungradable"
    return (f"Current analysis: predicted **{md_text(a.predicted_label)}** ("
            + ", ".join(f"{md_text(k)} {v:.0%}" for k, v in top) + f") · image `{a.image_sha256[:12]}`"
            + f" · saliency {a.saliency_method or '-'} ({a.saliency_target or '-'}) / {md_text(a.saliency_class or '-')}"
            + warn)


def warmup(ctx: AppContext) -> float:
    """Run one analysis of a synthetic image with the default preset so the first real one is fast."""
    t0 = time.perf_counter()
    try:
        from engine.synth import render_fundus
        image = Image.fromarray(render_fundus(0, 384).image)
        name = default_preset()
        if name is not None:
            ps = load_preset(name)
            with ctx.model_lock:
                probs = ctx.model.classify([image], ps)[0]
            _saliency(ctx, image, ps, max(probs, key=probs.get), saliency_methods()[0], 0.5)
    except Exception as e:  # warm-up is best effort: the app serves without it
        log.warning("warm-up failed: %s", one_line(e))
    return time.perf_counter() - t0


def decision_markdown(state: CurrentAnalysis | None) -> str:
    """The box above the probabilities: the screening decision first, as the Analyse tab leads with it."""
    if state is None or not state.screening:
        return ""
    return "#### " + state.screening.replace("Screening: ", "", 1)


def summary_markdown(state: CurrentAnalysis | None) -> str:
    """:func:`_analysis_summary`, naming the few-shot adapter when one gave the probabilities."""
    text = _analysis_summary(state)
    if state is not None and state.adapter_name:
        text += f" · adapted by `{md_text(state.adapter_name)}`"
    return text
