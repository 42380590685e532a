"""Event handlers of the VisionCLIP app: plain functions over the engine's public API.

Every handler takes an :class:`AppContext` first and returns plain values (or ``gr.update`` dicts), so
it can be unit-tested without a browser. User mistakes never raise: a handler returns a one-line
status (prefixed with ``STATUS_ERROR``) and calls ``gr.Warning`` so the browser shows a toast.
"""
from __future__ import annotations

import dataclasses
import hashlib
import html
import json
import logging
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import gradio as gr
import numpy as np
import pandas as pd
from PIL import Image

from engine import PromptSet, VisionCLIP, VisionCLIPError, load_image
from engine import prompts as engine_prompts
from engine.evaluate import compare_results, embed_folder, evaluate, plot_confusion_matrix
from engine.quality import assess_quality
from engine.saliency import DETAIL, DETAIL_METHODS
from engine.saliency import METHODS as SALIENCY_METHODS
from engine.saliency import SLOW_METHODS, explain
from engine.saliency import TARGETS as SALIENCY_TARGETS

from .store import VERDICTS, CaseRecord, CaseStore, StoreError, strip_and_thumbnail
from .uploads import NEUTRAL_RE, UploadNames

log = logging.getLogger(__name__)

STATUS_ERROR = "⚠"  # plain symbols (not emoji): render with ordinary fonts
STATUS_OK = "✓"
PROMPT_COLUMNS = ["class", "prompt"]
APP_MAX_PROMPT_CHARS = 500          # the text tower reads ~77 tokens; 500 characters is already far past it
APP_MAX_CLASSES = 50
MAX_NOTES_CHARS = 5000
MAX_FIELD_CHARS = 200
DEFAULT_MAX_UPLOAD_MB = 25
CASE_COLUMNS = ["id", "created_at", "reviewer", "verdict", "predicted_label", "corrected_labels", "confidence",
                "model_id", "notes"]
HISTORY_COLUMNS = ["revision", "created_at", "reviewer", "verdict", "corrected_labels", "confidence", "notes"]
EDITOR_CHOICE = "(prompt editor on the Analyse tab)"
NONE_CHOICE = "(none)"


class UserError(ValueError):
    """A mistake in the form the user can fix; its message is shown as one line."""


@dataclasses.dataclass
class AppContext:
    model: VisionCLIP
    store: CaseStore
    work_dir: Path                      # private temp folder for exports; never named after uploads
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB
    examples_dir: Path = Path(__file__).resolve().parent.parent / "assets" / "examples"
    # One model call at a time: Grad-CAM hooks on the shared network and the text cache are not thread-safe.
    model_lock: threading.RLock = dataclasses.field(default_factory=threading.RLock)
    upload_names: UploadNames = dataclasses.field(default_factory=UploadNames)
    data_root: Path | None = None       # --data-root: the only server folder users may name (None: none)

    @classmethod
    def create(cls, model: VisionCLIP, store: CaseStore, work_dir: str | Path | None = None, **kw) -> "AppContext":
        wd = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="visionclip_app_"))
        wd.mkdir(parents=True, exist_ok=True)
        return cls(model=model, store=store, work_dir=wd, **kw)

    def new_file(self, suffix: str) -> Path:
        """A fresh server-chosen file name in the work folder (upload names are never used)."""
        d = Path(tempfile.mkdtemp(dir=self.work_dir))
        return d / f"visionclip_{time.strftime('%Y%m%d_%H%M%S', time.gmtime())}{suffix}"


def md_text(value: Any) -> str:
    """User or prompt text for a Markdown output: shown as typed, never as a live HTML tag (SECURITY.md)."""
    return html.escape(str(value), quote=False)


def one_line(msg: Any) -> str:
    return " ".join(str(msg).split())[:300]


def error_status(msg: Any) -> str:
    text = one_line(msg)
    try:
        gr.Warning(text)
    except Exception:  # pragma: no cover - outside a request gradio only logs
        pass
    return f"{STATUS_ERROR} {text}"


def ok_status(msg: Any) -> str:
    return f"{STATUS_OK} {one_line(msg)}"


# ------------------------------------------------------------------------------------- prompt table
def table_from_prompt_set(ps: PromptSet) -> pd.DataFrame:
    return pd.DataFrame([list(row) for row in ps.rows()], columns=PROMPT_COLUMNS)


def _table_rows(table: Any) -> list[list[str]]:
    if table is None:
        return []
    if isinstance(table, pd.DataFrame):
        rows = table.astype(object).where(pd.notna(table), "").values.tolist()
    elif isinstance(table, dict) and "data" in table:
        rows = table["data"]
    else:
        rows = list(table)
    out = []
    for r in rows:
        r = list(r) + ["", ""]
        out.append([("" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)) for v in r[:2]])
    return out


def prompt_set_from_table(table: Any) -> PromptSet:
    """Build a validated PromptSet from the editor's class | prompt rows (fully blank rows are ignored).

    A class cell "class > subclass" puts the prompt in a subclass; such a class's probability is
    the sum of its subclasses'."""
    classes: dict[str, Any] = {}
    for i, (cls, prompt) in enumerate(_table_rows(table), start=1):
        cls, prompt = " ".join(cls.split()), " ".join(prompt.split())
        if not cls and not prompt:
            continue
        if not cls:
            raise UserError(f"Row {i}: the class name is blank.")
        if not prompt:
            raise UserError(f"Row {i} (class '{cls}'): the prompt is blank.")
        if len(prompt) > APP_MAX_PROMPT_CHARS:
            raise UserError(f"Row {i} (class '{cls}'): the prompt is {len(prompt)} characters long; "
                            f"the limit is {APP_MAX_PROMPT_CHARS}.")
        name, _, sub = cls.partition(engine_prompts.SUBCLASS_SEPARATOR)
        if engine_prompts.SUBCLASS_SEPARATOR in sub:
            raise UserError(f"Row {i}: a subclass has no subclasses of its own ('{cls}').")
        if isinstance(classes.get(name), list) and sub or isinstance(classes.get(name), dict) and not sub:
            raise UserError(f"Row {i}: class '{name}' has prompts both with and without a subclass; "
                            f"name a subclass on every row of '{name}', or on none.")
        if sub:
            classes.setdefault(name, {}).setdefault(sub, []).append(prompt)
        else:
            classes.setdefault(name, []).append(prompt)
    if not classes:
        raise UserError("The prompt table is empty: add at least one class with a prompt.")
    lower: dict[str, str] = {}
    for cls in classes:
        if cls.lower() in lower:
            raise UserError(f"Duplicate class: '{lower[cls.lower()]}' and '{cls}' differ only in case; "
                            "use one name for all of a class's prompts.")
        lower[cls.lower()] = cls
    if len(classes) > APP_MAX_CLASSES:
        raise UserError(f"Too many classes ({len(classes)}); the limit is {APP_MAX_CLASSES}.")
    if len(classes) < 2:
        raise UserError("Zero-shot classification needs at least two classes.")
    try:
        ps = PromptSet(classes)
    except VisionCLIPError as e:
        raise UserError(str(e)) from None
    n_scored = len(ps.scored_groups())
    if n_scored > APP_MAX_CLASSES:
        raise UserError(f"Too many subclasses ({n_scored}); the limit is {APP_MAX_CLASSES}.")
    return ps


def add_prompt_row(table: Any) -> pd.DataFrame:
    rows = _table_rows(table)
    last_cls = next((r[0] for r in reversed(rows) if r[0].strip()), "")
    return pd.DataFrame(rows + [[last_cls, ""]], columns=PROMPT_COLUMNS)


def delete_prompt_row(table: Any, row_number: Any) -> tuple[Any, str]:
    rows = _table_rows(table)
    try:
        i = int(float(row_number))
    except (TypeError, ValueError):
        return gr.update(), error_status("Enter the number of the row to remove.")
    if not 1 <= i <= len(rows):
        return gr.update(), error_status(f"There is no row {i} (the table has {len(rows)} rows).")
    removed = rows.pop(i - 1)
    if not rows:
        rows = [["", ""]]
    return pd.DataFrame(rows, columns=PROMPT_COLUMNS), ok_status(f"Removed row {i} ({removed[0]}: {removed[1][:40]}).")


def case_id_from_selection(df: Any, index: Any) -> int | None:
    """The case id of the clicked row of the cases table (index is [row, col] from gr.SelectData)."""
    try:
        row = index[0] if isinstance(index, (list, tuple)) else int(index)
        if isinstance(df, pd.DataFrame):
            return int(df.iloc[int(row)]["id"])
        return int(list(df)[int(row)][0])
    except (TypeError, ValueError, IndexError, KeyError):
        return None


def preset_names() -> list[str]:
    try:
        return engine_prompts.list_presets()
    except Exception:  # pragma: no cover
        return []


def default_preset() -> str | None:
    names = preset_names()
    if engine_prompts.DEFAULT_PRESET in names:
        return engine_prompts.DEFAULT_PRESET
    return names[0] if names else None


def load_preset_table(name: str) -> tuple[Any, str]:
    try:
        ps = engine_prompts.load_preset(name)
    except VisionCLIPError as e:
        return gr.update(), error_status(e)
    return table_from_prompt_set(ps), ok_status(f"Loaded preset '{name}' ({len(ps)} classes).")


def load_prompt_file(file_path: str | None) -> tuple[Any, str]:
    if not file_path:
        return gr.update(), error_status("Choose a prompt-set JSON file first.")
    try:
        p = Path(file_path)
        if p.stat().st_size > 1_000_000:
            raise UserError("Prompt-set file is too large (1 MB at most).")
        ps = PromptSet.from_json_text(p.read_bytes().decode("utf-8", errors="strict"))
        prompt_set_from_table(table_from_prompt_set(ps))  # the app's own limits too
    except UnicodeDecodeError:
        return gr.update(), error_status("Prompt-set file is not UTF-8 text.")
    except (VisionCLIPError, UserError, OSError) as e:
        return gr.update(), error_status(e)
    return table_from_prompt_set(ps), ok_status(f"Loaded prompt set with {len(ps)} classes.")


def save_prompt_file(ctx: AppContext, table: Any) -> tuple[str | None, str]:
    try:
        ps = prompt_set_from_table(table)
    except UserError as e:
        return None, error_status(e)
    path = ctx.new_file(".json")
    ps.save(path)
    return str(path), ok_status(f"Prompt set saved ({len(ps)} classes, sha256 {ps.sha256[:12]}).")


# ------------------------------------------------------------------------------------- analysis
def _read_upload(ctx: AppContext, image_path: str | None) -> tuple[bytes, Image.Image]:
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
        image = load_image(data)
    except VisionCLIPError as e:
        msg = str(e)
        msg = msg[len("image: "):] if msg.startswith("image: ") else msg
        raise UserError(f"Not a usable image: {msg}") from None
    return data, image


def _saliency(ctx: AppContext, image: Image.Image, ps: PromptSet, class_name: str, method: str,
              opacity: float, target: str = SALIENCY_TARGETS[0], detail: bool = False
              ) -> tuple[Image.Image | None, str, str | None]:
    """Returns (overlay, method used, target used); (None, message, None) when saliency is unavailable."""
    try:
        with ctx.model_lock:
            res = explain(ctx.model, image, ps, class_name, method=method or "gradcam", target=target,
                          opacity=float(opacity), layers=DETAIL if detail else None)
    except VisionCLIPError as e:
        return None, one_line(e), None
    return res.overlay, f"{res.method} ({DETAIL})" if detail else res.method, res.target


def _detail_flag(detail: Any) -> bool:
    if detail is None or isinstance(detail, bool):
        return bool(detail)
    raise UserError(f"Lesion-level detail must be on or off, not {detail!r}.")


def method_for_detail(detail: bool, method: str) -> str:
    """The method to show when lesion-level detail is switched: Grad-CAM's channel-pooled weights wash out
    on the fine layer, the element-wise product stays sharp there (docs/saliency.md)."""
    if detail:
        return method if method in DETAIL_METHODS else DETAIL_METHODS[0]
    return saliency_methods()[0] if method in DETAIL_METHODS else method


def _original_name(ctx: AppContext, image_path: str | None) -> str | None:
    """The browser's file name (kept in memory only; stored in the case log only on opt-in)."""
    if not image_path:
        return None
    name = Path(image_path).name
    if NEUTRAL_RE.match(name):  # renamed on upload by uploads.NeutralUploadNames
        return ctx.upload_names.original_name(name)
    return name


def saliency_methods() -> list[str]:
    return [m for m in SALIENCY_METHODS if m not in SLOW_METHODS]  # slow ones take minutes on a CPU


def analyse(ctx: AppContext, image_path: str | None, table: Any, method: str, opacity: float,
            saliency_class: str | None = None, target: str = SALIENCY_TARGETS[0], detail: bool = False) -> tuple:
    """Classify the upload with the editor's prompts; returns
    (status, label_dict, original, overlay, quality_md, class_dropdown_update, analysis_state)."""
    empty = (None, None, None, "", gr.update(), None)
    try:
        opacity = float(opacity)
        if not 0.0 <= opacity <= 1.0:
            raise UserError("Opacity must be between 0 and 1.")
        if method not in saliency_methods():
            raise UserError(f"Unknown saliency method {method!r}.")
        if target not in SALIENCY_TARGETS:
            raise UserError(f"Unknown saliency target {target!r}; choose {' or '.join(SALIENCY_TARGETS)}.")
        detail = _detail_flag(detail)
        ps = prompt_set_from_table(table)
        data, image = _read_upload(ctx, image_path)
    except (UserError, TypeError, ValueError) as e:
        return (error_status(e), *empty)
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with ctx.model_lock:
                class_probs, sub_probs = ctx.model.class_and_subclass_probabilities(ctx.model.encode_images([image]), ps)
                probs = dict(zip(ps.classes, map(float, class_probs[0])))
    except VisionCLIPError as e:
        return (error_status(e), *empty)
    predicted = max(probs, key=probs.get)
    cls = saliency_class if saliency_class in probs else predicted
    overlay, used, used_target = _saliency(ctx, image, ps, cls, method, opacity, target, detail)
    quality = assess_quality(image)
    elapsed = time.perf_counter() - t0
    if quality["gradable"]:
        quality_md = "Image quality: no problems found by the automatic screen."
    else:
        quality_md = ("### ⚠ This image looks ungradable\n" + "\n".join(f"- {r}" for r in quality["reasons"])
                      + "\n\nResults on ungradable images are unreliable.")
    state = {
        "image": image, "image_sha256": hashlib.sha256(data).hexdigest(),
        "thumbnail": strip_and_thumbnail(image),
        "original_filename": _original_name(ctx, image_path),
        "prompt_set_json": json.dumps(ps.to_dict(), ensure_ascii=False), "prompt_set_sha256": ps.sha256,
        "prompt_set": ps, "probabilities": probs, "predicted_label": predicted, "model_id": ctx.model.model_id,
        "saliency_method": used if overlay is not None else None, "saliency_target": used_target,
        "saliency_class": cls if overlay is not None else None,
        "saliency_thumbnail": strip_and_thumbnail(overlay) if overlay is not None else None,
        "quality": quality, "analysed_at": time.time(),
    }
    notes = [f"Predicted **{md_text(predicted)}** ({probs[predicted]:.1%}) with {len(ps)} classes in {elapsed:.2f} s"
             f" · model `{ctx.model.model_id}`."]
    if len(ps.subclasses(predicted)) > 1:  # what a grouped class's score is made of
        parts = sorted(((float(p), sub) for (c, sub, _), p in zip(ps.scored_groups(), sub_probs[0]) if c == predicted),
                       reverse=True)
        notes.append(f"{md_text(predicted)} is the sum of: " + ", ".join(f"{md_text(sub)} {p:.1%}" for p, sub in parts) + ".")
    if overlay is None:
        notes.append(f"No saliency map: {used}.")
    truncated = [w for w in caught if "truncated" in str(w.message)]
    if truncated:
        notes.append(f"{len(truncated)} prompt(s) were longer than the text tower reads and were truncated.")
    if not quality["gradable"]:
        notes.append("The image looks ungradable.")
    return (ok_status(" ".join(notes)), probs, image, overlay, quality_md,
            gr.update(choices=list(probs), value=cls), state)


def update_saliency(ctx: AppContext, state: dict | None, class_name: str, method: str, opacity: float,
                    target: str = SALIENCY_TARGETS[0], detail: bool = False) -> tuple:
    """Recompute the overlay for another class/method/opacity/target/detail; returns (overlay, status, state)."""
    if not state:
        return None, error_status("Analyse an image first."), state
    if class_name not in state["probabilities"]:
        return gr.update(), error_status(f"Unknown class {class_name!r}."), state
    try:
        opacity = float(opacity)
    except (TypeError, ValueError):
        return gr.update(), error_status("Opacity must be a number between 0 and 1."), state
    try:
        detail = _detail_flag(detail)
    except UserError as e:
        return gr.update(), error_status(e), state
    if not 0 <= opacity <= 1 or method not in saliency_methods() or target not in SALIENCY_TARGETS:
        return gr.update(), error_status("Choose a listed method and target, and an opacity between 0 and 1."), state
    overlay, used, used_target = _saliency(ctx, state["image"], state["prompt_set"], class_name, method, opacity, target,
                                           detail)
    if overlay is None:
        return None, error_status(f"No saliency map: {used}."), state
    state = {**state, "saliency_method": used, "saliency_target": used_target, "saliency_class": class_name,
             "saliency_thumbnail": strip_and_thumbnail(overlay)}
    return overlay, ok_status(f"Saliency ({used}, {used_target}) for '{class_name}'."), state


def warmup(ctx: AppContext) -> float:
    """Run one analysis of a synthetic image with the default preset so the first real one is fast."""
    t0 = time.perf_counter()
    try:
        from engine.synth import render_fundus
        image = Image.fromarray(render_fundus(0, 384).image)
        ps = engine_prompts.load_preset(default_preset()) if default_preset() else None
        if ps is not None:
            with ctx.model_lock:
                probs = ctx.model.classify([image], ps)[0]
            _saliency(ctx, image, ps, max(probs, key=probs.get), saliency_methods()[0], 0.5)
    except Exception as e:  # warm-up is best effort
        log.warning("warm-up failed: %s", one_line(e))
    return time.perf_counter() - t0


# ------------------------------------------------------------------------------------- review
def _labels(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = value.split(",")
    out = []
    for v in value:
        v = " ".join(str(v).split())
        if v and v not in out:
            if len(v) > MAX_FIELD_CHARS:
                raise UserError("A corrected label is too long.")
            out.append(v)
    return out


def _confidence(value: Any) -> float | None:
    if value is None or value == "":
        return None
    try:
        c = float(value)
    except (TypeError, ValueError):
        raise UserError("Confidence must be a number between 0 and 1.") from None
    if not np.isfinite(c) or not 0.0 <= c <= 1.0:
        raise UserError("Confidence must be a number between 0 and 1.")
    return c


def save_review(ctx: AppContext, state: dict | None, reviewer: str, verdict: str, corrected: Any,
                confidence: Any, notes: str, opt_in: bool = False, patient_id: str = "") -> tuple[str, int | None]:
    """Log the current analysis with its review; returns (status, case id or None)."""
    try:
        if not state:
            raise UserError("Nothing to save: analyse an image on the Analyse tab first.")
        reviewer = " ".join(str(reviewer or "").split())
        if not reviewer:
            raise UserError("Enter the reviewer's name.")
        if len(reviewer) > 100:
            raise UserError("Reviewer name is too long (100 characters at most).")
        if verdict not in VERDICTS:
            raise UserError(f"Choose a verdict: {', '.join(VERDICTS)}.")
        labels = _labels(corrected)
        if verdict == "disagree" and not labels:
            raise UserError("A 'disagree' verdict needs at least one corrected label.")
        notes = str(notes or "")
        if len(notes) > MAX_NOTES_CHARS:
            raise UserError(f"Notes are too long ({len(notes)} characters; {MAX_NOTES_CHARS} at most).")
        patient_id = " ".join(str(patient_id or "").split())
        if len(patient_id) > MAX_FIELD_CHARS:
            raise UserError("Patient identifier is too long.")
        rec = CaseRecord(
            reviewer=reviewer, verdict=verdict, image_sha256=state["image_sha256"], thumbnail=state["thumbnail"],
            prompt_set_json=state["prompt_set_json"], prompt_set_sha256=state["prompt_set_sha256"],
            probabilities=state["probabilities"], model_id=state["model_id"],
            predicted_label=state["predicted_label"], saliency_method=state.get("saliency_method"),
            saliency_target=state.get("saliency_target"),
            saliency_class=state.get("saliency_class"), saliency_thumbnail=state.get("saliency_thumbnail"),
            corrected_labels=labels, confidence=_confidence(confidence), notes=notes,
            store_identifiers=bool(opt_in), original_filename=state.get("original_filename"),
            patient_id=patient_id or None,
        )
        case_id = ctx.store.log_case(rec)
    except (UserError, StoreError, KeyError, TypeError) as e:
        return error_status(e if not isinstance(e, (KeyError, TypeError)) else "The analysis is incomplete; "
                            "analyse the image again."), None
    return ok_status(f"Saved case #{case_id} ({verdict})."), case_id


# ------------------------------------------------------------------------------------- cases
def _date(value: Any, name: str) -> str | None:
    """Accept '', None, 'YYYY-MM-DD', an ISO timestamp or a unix timestamp (gr.DateTime)."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        import datetime as dt
        return dt.datetime.fromtimestamp(float(value), dt.timezone.utc).isoformat()
    s = str(value).strip()
    import datetime as dt
    try:
        if len(s) == 10:
            dt.date.fromisoformat(s)
            return s
        d = dt.datetime.fromisoformat(s.replace("Z", "+00:00"))
        if d.tzinfo is None:
            d = d.replace(tzinfo=dt.timezone.utc)
        return d.astimezone(dt.timezone.utc).isoformat()
    except ValueError:
        raise UserError(f"{name} must be a date like 2026-01-31.") from None


def _filters(reviewer, label, verdict, date_from, date_to, text) -> dict:
    if verdict and verdict not in VERDICTS and verdict != "any":
        raise UserError(f"Unknown verdict filter {verdict!r}.")
    f = {"reviewer": (reviewer or "").strip() or None, "label": (label or "").strip() or None,
         "verdict": None if verdict in (None, "", "any") else verdict,
         "date_from": _date(date_from, "From date"), "date_to": _date(date_to, "To date"),
         "text": (text or "").strip() or None}
    if f["date_from"] and f["date_to"] and f["date_from"][:10] > f["date_to"][:10]:
        raise UserError("The 'from' date is after the 'to' date.")
    return f


def cases_frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame([{k: r.get(k) for k in CASE_COLUMNS} for r in rows], columns=CASE_COLUMNS)
    if not df.empty:
        df["corrected_labels"] = df["corrected_labels"].map(lambda s: ", ".join(json.loads(s or "[]")))
        df["created_at"] = df["created_at"].str.slice(0, 19).str.replace("T", " ")
    return df


def agreement_figure(ag: dict):
    rate = "n/a" if ag["agreement_rate"] is None else f"{ag['agreement_rate']:.0%}"
    title = f"model-reviewer agreement {rate} (n={ag['n']})"
    if not ag["labels"]:
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(4.5, 3.5), dpi=90)
        ax.text(0.5, 0.5, "no reviewed cases", ha="center", va="center")
        ax.set_axis_off()
        ax.set_title(title, fontsize=9)
        plt.close(fig)
        return fig
    import matplotlib.pyplot as plt

    fig = plot_confusion_matrix({"classes": ag["labels"], "confusion_matrix": ag["matrix"]}, title=title,
                                xlabel="model prediction", ylabel="reviewer label")
    plt.close(fig)
    return fig


def search_cases(ctx: AppContext, reviewer=None, label=None, verdict=None, date_from=None, date_to=None,
                 text=None) -> tuple:
    """Returns (cases DataFrame, agreement markdown, agreement figure, status)."""
    try:
        rows = ctx.store.search(**_filters(reviewer, label, verdict, date_from, date_to, text), limit=None)
    except UserError as e:
        return gr.update(), gr.update(), gr.update(), error_status(e)
    ag = ctx.store.agreement(rows)
    rate = "n/a" if ag["agreement_rate"] is None else f"{ag['agreement_rate']:.1%}"
    md = (f"**{len(rows)} case(s)** · model-vs-reviewer agreement **{rate}** over {ag['n']} graded case(s)"
          f" · {ag['n_ungradable']} ungradable")
    return cases_frame(rows[:500]), md, agreement_figure(ag), ok_status(f"{len(rows)} case(s) found.")


def _png(data: bytes | None) -> Image.Image | None:
    if not data:
        return None
    import io
    return Image.open(io.BytesIO(data)).convert("RGB")


def open_case(ctx: AppContext, case_id: Any) -> tuple:
    """Returns (thumbnail, saliency thumbnail, details markdown, history DataFrame, status)."""
    try:
        cid = int(float(case_id))
    except (TypeError, ValueError):
        return None, None, "", None, error_status("Enter a case id (a number from the table).")
    case = ctx.store.get_case(cid)
    if case is None:
        return None, None, "", None, error_status(f"No case #{cid}.")
    probs = json.loads(case["probabilities"] or "{}")
    top = sorted(probs.items(), key=lambda kv: -kv[1])[:5]
    lines = [
        f"### Case #{cid}",
        f"- Logged (UTC): {case['created_at']} · last change {case['updated_at']}",
        f"- Model `{case['model_id']}` predicted **{md_text(case['predicted_label'])}**; "
        + ", ".join(f"{md_text(k)} {v:.1%}" for k, v in top),
        f"- Current verdict: **{case['verdict']}** by {md_text(case['reviewer'])}"
        + (f"; corrected: {md_text(', '.join(json.loads(case['corrected_labels'] or '[]')))}"
           if json.loads(case["corrected_labels"] or "[]") else ""),
        f"- Saliency: {case['saliency_method'] or '-'}"
        + (f" ({case['saliency_target']})" if case.get("saliency_target") else "")
        + f" for '{md_text(case['saliency_class'] or '-')}'",
        f"- Image SHA-256 `{case['image_sha256'][:16]}…` · prompt set `{(case['prompt_set_sha256'] or '')[:12]}`",
    ]
    if case.get("original_filename") or case.get("patient_id"):
        lines.append(f"- Identifiers (opted in): file '{md_text(case.get('original_filename') or '-')}', "
                     f"patient '{md_text(case.get('patient_id') or '-')}'")
    hist = pd.DataFrame([{k: h.get(k) for k in HISTORY_COLUMNS} for h in case["history"]], columns=HISTORY_COLUMNS)
    return (_png(case["thumbnail"]), _png(case.get("saliency_thumbnail")), "\n".join(lines), hist,
            ok_status(f"Opened case #{cid}."))


def add_correction(ctx: AppContext, case_id: Any, reviewer: str, verdict: str, corrected: Any, confidence: Any,
                   notes: str) -> str:
    try:
        cid = int(float(case_id))
        labels = _labels(corrected)
        if verdict == "disagree" and not labels:
            raise UserError("A 'disagree' verdict needs at least one corrected label.")
        rev = ctx.store.add_revision(cid, reviewer=reviewer, verdict=verdict, corrected_labels=labels,
                                     confidence=_confidence(confidence), notes=str(notes or "")[:MAX_NOTES_CHARS])
    except (TypeError, ValueError) as e:  # UserError and StoreError are ValueErrors
        return error_status(e if isinstance(e, (UserError, StoreError)) else "Open a case (enter its id) first.")
    return ok_status(f"Case #{cid}: revision {rev} appended.")


def export_cases(ctx: AppContext, fmt: str, reviewer=None, label=None, verdict=None, date_from=None,
                 date_to=None, text=None) -> tuple[str | None, str]:
    try:
        if fmt not in ("csv", "json"):
            raise UserError("Export format must be csv or json.")
        rows = ctx.store.search(**_filters(reviewer, label, verdict, date_from, date_to, text), limit=None)
    except UserError as e:
        return None, error_status(e)
    path = ctx.new_file(f".{fmt}")
    (ctx.store.export_csv if fmt == "csv" else ctx.store.export_json)(path, rows)
    return str(path), ok_status(f"Exported {len(rows)} case(s) as {fmt.upper()}.")


# ------------------------------------------------------------------------------------- prompt lab
def make_synthetic_benchmark(ctx: AppContext, n: int, seed: int, prompt_sets: list[PromptSet] | None = None,
                             size: int = 256, progress: Callable | None = None) -> Path:
    """A balanced labelled folder (images/*.png + labels.csv path,label) from the engine's synthetic generator.

    Classes are the generator's screening conditions whose names are classes of every given prompt set;
    each image has exactly one condition.
    """
    from engine.synth.benchmark import condition_class, write_benchmark
    from engine.synth.schema import CONDITIONS

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
        return engine_prompts.load_preset(choice)
    except VisionCLIPError as e:
        raise UserError(str(e)) from None


LAB_BOOTSTRAP = 1000  # resamples for the prompt lab's 95% intervals


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


def run_prompt_lab(ctx: AppContext, source: str, folder: str, n_synth: Any, seed: Any, choice_a: str,
                   choice_b: str, table: Any, progress: Callable | None = None) -> tuple:
    """Evaluate one or two prompt sets; returns (metrics A md, fig A, metrics B md, fig B, status)."""
    blank = (gr.update(), gr.update(), gr.update(), gr.update())
    try:
        ps_a = _lab_prompt_set(choice_a, table)
        if ps_a is None:
            raise UserError("Choose prompt set A.")
        ps_b = _lab_prompt_set(choice_b, table)
        if source == "synthetic":
            try:
                n = int(n_synth)
                sd = int(seed)
            except (TypeError, ValueError):
                raise UserError("Number of images and seed must be whole numbers.") from None
            if not 4 <= n <= 2000:
                raise UserError("Synthetic benchmark size must be between 4 and 2000 images.")
            if sd < 0:
                raise UserError("Seed must be a non-negative whole number.")
            data_dir = make_synthetic_benchmark(ctx, n, sd, [p for p in (ps_a, ps_b) if p is not None],
                                                progress=progress)
        elif source == "folder":
            if not folder or not str(folder).strip():
                raise UserError("Enter the path of a labelled folder (with labels.csv).")
            data_dir = Path(str(folder).strip()).expanduser()
            if not (data_dir / "labels.csv").is_file():
                raise UserError(f"No labels.csv in {data_dir}.")
        else:
            raise UserError("Choose a data source.")
    except (UserError, VisionCLIPError) as e:
        return (*blank, error_status(e))
    def prog(done, total):
        if progress and total:
            progress(0.3 + 0.7 * done / total, desc=f"encoding images: {done}/{total}")
    outs, results = [], []
    sets = [("A", ps_a)] + ([("B", ps_b)] if ps_b is not None else [])
    try:
        with ctx.model_lock:  # the images are encoded once; each prompt set only re-scores them
            folder = embed_folder(ctx.model, data_dir, progress=prog)
    except VisionCLIPError as e:
        return (*blank, error_status(e))
    for name, ps in sets:
        try:
            with ctx.model_lock:
                r = evaluate(ctx.model, folder, prompt_set=ps, bootstrap=LAB_BOOTSTRAP)
        except VisionCLIPError as e:
            return (*blank, error_status(f"Prompt set {name}: {e}"))
        versus = compare_results(results[0], r, resamples=LAB_BOOTSTRAP) if results else None
        results.append(r)
        outs.append((_metrics_md(f"Prompt set {name} ({len(ps)} classes)", r, versus), plot_confusion_matrix(r)))
    if len(outs) == 1:
        outs.append(("", None))
    return outs[0][0], outs[0][1], outs[1][0], outs[1][1], ok_status(
        f"Evaluated {len(sets)} prompt set(s) on {outs[0][0].split('| images | ')[1].split(' |')[0]} images.")


# ------------------------------------------------------------------------------------- about
def example_images(ctx: AppContext) -> list[str]:
    d = ctx.examples_dir
    return sorted(str(p) for p in d.glob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg")) if d.is_dir() else []


def example_captions(ctx: AppContext) -> list[tuple[str, str]]:
    caps = {}
    f = ctx.examples_dir / "captions.json"
    if f.is_file():
        try:
            caps = json.loads(f.read_text(encoding="utf-8"))
        except ValueError:
            caps = {}
    return [(p, caps.get(Path(p).name, "synthetic fundus")) for p in example_images(ctx)]


def about_markdown(ctx: AppContext) -> str:
    import platform
    import engine
    import open_clip
    import torch
    meta = ctx.model.metadata or {}
    td = meta.get("training_data") or {}
    card = Path(__file__).resolve().parent.parent / "assets" / "model" / "MODEL_CARD.md"
    parts = ["## Intended use and limitations",
             "VisionCLIP is for **research and demonstration only. It is not a medical device** and must not be "
             "used for diagnosis, screening or treatment decisions. It was trained **only on synthetic fundus "
             "images**; its zero-shot outputs on real photographs can be wrong in ways that are not obvious, "
             "depend strongly on the wording of the prompts, and have not been clinically validated. Grad-CAM "
             "maps show what influenced the score, not where disease is.",
             "## Data card",
             f"- Training data: **100% synthetic** fundus images "
             f"({td.get('synthetic_images', td.get('synthetic_images_seen', 'unknown'))} images seen in training)",
             f"- Real patient images used for training: **{td.get('real_patient_images', 0)}**",
             f"- Generator version: {td.get('generator_version') or td.get('generator') or 'n/a'}",
             f"- Model id: `{ctx.model.model_id}` · trained: {meta.get('trained', 'unknown')}"]
    shown = ("synthetic_images", "synthetic_images_seen", "real_patient_images", "generator_version", "generator")
    extra = {k: v for k, v in td.items() if k not in shown}
    for k, v in extra.items():
        parts.append(f"- {k.replace('_', ' ')}: {v if not isinstance(v, (dict, list)) else json.dumps(v)[:300]}")
    parts += ["## Model card", card.read_text(encoding="utf-8") if card.is_file() else
              "_No model card shipped with this build (assets/model/MODEL_CARD.md)._",
              "## Privacy",
              "Cases are stored in a local SQLite file with the image hash and a metadata-free thumbnail. "
              "File names and patient identifiers are stored only when the reviewer ticks the opt-in box.",
              "## Versions",
              f"engine {engine.__version__} · gradio {gr.__version__} · torch {torch.__version__} · "
              f"open_clip {open_clip.__version__} · Python {platform.python_version()} · "
              f"case-store schema v{ctx.store.schema_version}"]
    return "\n\n".join(parts)
