"""The Cases tab: search the case log, open a case, append a correction, export."""
from __future__ import annotations

import datetime as dt
import io
import json
from typing import Any

import gradio as gr
import pandas as pd
from PIL import Image

from ..store import VERDICTS, Review, StoreError
from .common import AppContext, UserError, error_status, md_text, ok_status

CASE_COLUMNS = ["id", "created_at", "reviewer", "verdict", "predicted_label", "corrected_labels", "confidence",
                "model_id", "notes"]
HISTORY_COLUMNS = ["revision", "created_at", "reviewer", "verdict", "corrected_labels", "confidence", "notes"]
MAX_TABLE_ROWS = 500
EXPORT_FORMATS = ("csv", "json")


def _date(value: Any, name: str) -> str | None:
    """Accept '', None, 'YYYY-MM-DD', an ISO timestamp or a unix timestamp (gr.DateTime)."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return dt.datetime.fromtimestamp(float(value), dt.timezone.utc).isoformat()
    s = str(value).strip()
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


def case_id_from_selection(df: Any, index: Any) -> int | None:
    """The case id of the clicked row of the cases table (index is [row, col] from gr.SelectData)."""
    try:
        row = index[0] if isinstance(index, (list, tuple)) else int(index)
        if isinstance(df, pd.DataFrame):
            return int(df.iloc[int(row)]["id"])
        return int(list(df)[int(row)][0])
    except (TypeError, ValueError, IndexError, KeyError):
        return None


def cases_frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame([{k: r.get(k) for k in CASE_COLUMNS} for r in rows], columns=CASE_COLUMNS)
    if not df.empty:
        df["corrected_labels"] = df["corrected_labels"].map(lambda s: ", ".join(json.loads(s or "[]")))
        df["created_at"] = df["created_at"].str.slice(0, 19).str.replace("T", " ")
    return df


def agreement_figure(ag: dict):
    import matplotlib.pyplot as plt

    from engine.evaluate import plot_confusion_matrix  # here: engine.evaluate imports scikit-learn (seconds)

    rate = "n/a" if ag["agreement_rate"] is None else f"{ag['agreement_rate']:.0%}"
    title = f"model-reviewer agreement {rate} (n={ag['n']})"
    if ag["labels"]:
        fig = plot_confusion_matrix({"classes": ag["labels"], "confusion_matrix": ag["matrix"]}, title=title,
                                    xlabel="model prediction", ylabel="reviewer label")
    else:
        fig, ax = plt.subplots(figsize=(4.5, 3.5), dpi=90)
        ax.text(0.5, 0.5, "no reviewed cases", ha="center", va="center")
        ax.set_axis_off()
        ax.set_title(title, fontsize=9)
    plt.close(fig)
    return fig


def agreement_markdown(n_cases: int, ag: dict) -> str:
    rate = "n/a" if ag["agreement_rate"] is None else f"{ag['agreement_rate']:.1%}"
    return (f"**{n_cases} case(s)** · model-vs-reviewer agreement **{rate}** over {ag['n']} graded case(s)"
            f" · {ag['n_ungradable']} ungradable")


def reader_agreement_lines(ctx: AppContext) -> list[str]:
    """Inter-reader agreement of each double-read worklist, shown beside model-reader agreement."""
    out = []
    for wl in ctx.store.worklists():
        if wl["readings"] > 1:
            ag = ctx.store.reader_agreement(wl["id"])
            if ag["n"]:
                kappa = "n/a" if ag["kappa"] is None else f"{ag['kappa']:.2f}"
                out.append(f"\n\nWorklist #{wl['id']} {md_text(wl['name'])}: inter-reader Cohen's kappa **{kappa}** "
                           f"over {ag['n']} double-read image(s)")
    return out


def search_cases(ctx: AppContext, reviewer=None, label=None, verdict=None, date_from=None, date_to=None,
                 text=None) -> tuple:
    """Returns (cases DataFrame, agreement markdown, agreement figure, status)."""
    try:
        rows = ctx.store.search(**_filters(reviewer, label, verdict, date_from, date_to, text), limit=None)
        ag = ctx.store.agreement(rows)
        md = agreement_markdown(len(rows), ag) + "".join(reader_agreement_lines(ctx))
    except (UserError, StoreError) as e:  # StoreError: the case log cannot be read (lost folder, disk fault)
        return gr.update(), gr.update(), gr.update(), error_status(e)
    return (cases_frame(rows[:MAX_TABLE_ROWS]), md, agreement_figure(ag),
            ok_status(f"{len(rows)} case(s) found."))


def _png(data: bytes | None) -> Image.Image | None:
    return Image.open(io.BytesIO(data)).convert("RGB") if data else None


def _adapter_of(case: dict) -> dict | None:
    try:
        adapter = json.loads(case.get("adapter") or "null")
    except ValueError:
        return None
    return adapter if isinstance(adapter, dict) else None


def case_markdown(case: dict) -> str:
    probs = json.loads(case["probabilities"] or "{}")
    top = sorted(probs.items(), key=lambda kv: -kv[1])[:5]
    corrected = json.loads(case["corrected_labels"] or "[]")
    lines = [
        f"### Case #{case['id']}",
        f"- Logged (UTC): {case['created_at']} · last change {case['updated_at']}",
        f"- Model `{case['model_id']}` predicted **{md_text(case['predicted_label'])}**; "
        + ", ".join(f"{md_text(k)} {v:.1%}" for k, v in top),
        f"- Current verdict: **{case['verdict']}** by {md_text(case['reviewer'])}"
        + (f"; corrected: {md_text(', '.join(corrected))}" if corrected else ""),
        f"- Saliency: {case['saliency_method'] or '-'}"
        + (f" ({case['saliency_target']})" if case.get("saliency_target") else "")
        + f" for '{md_text(case['saliency_class'] or '-')}'",
        f"- Image SHA-256 `{case['image_sha256'][:16]}…` · prompt set `{(case['prompt_set_sha256'] or '')[:12]}`",
    ]
    adapter = _adapter_of(case)
    if adapter:  # the probabilities above are the adapted ones
        lines.append(f"- Adapted by `{adapter.get('file', '?')}` ({adapter.get('method', '?')}, SHA-256 "
                     f"`{str(adapter.get('sha256', ''))[:12]}`)")
    if case.get("original_filename") or case.get("patient_id"):
        lines.append(f"- Identifiers (opted in): file '{md_text(case.get('original_filename') or '-')}', "
                     f"patient '{md_text(case.get('patient_id') or '-')}'")
    return "\n".join(lines)


def open_case(ctx: AppContext, case_id: Any) -> tuple:
    """Returns (thumbnail, saliency thumbnail, details markdown, history DataFrame, status)."""
    try:
        cid = int(float(case_id))
    except (TypeError, ValueError):
        return None, None, "", None, error_status("Enter a case id (a number from the table).")
    try:
        case = ctx.store.get_case(cid)
    except StoreError as e:
        return None, None, "", None, error_status(e)
    if case is None:
        return None, None, "", None, error_status(f"No case #{cid}.")
    hist = pd.DataFrame([{k: h.get(k) for k in HISTORY_COLUMNS} for h in case["history"]], columns=HISTORY_COLUMNS)
    return (_png(case["thumbnail"]), _png(case.get("saliency_thumbnail")), case_markdown(case), hist,
            ok_status(f"Opened case #{cid}."))


def add_correction(ctx: AppContext, case_id: Any, reviewer: str, verdict: str, corrected: Any, confidence: Any,
                   notes: str) -> str:
    try:
        cid = int(float(case_id))
    except (TypeError, ValueError):
        return error_status("Open a case (enter its id) first.")
    try:
        rev = ctx.store.add_revision(cid, Review(reviewer=reviewer, verdict=verdict, corrected_labels=corrected,
                                                 confidence=confidence, notes=notes))
    except StoreError as e:
        return error_status(e)
    return ok_status(f"Case #{cid}: revision {rev} appended.")


def export_cases(ctx: AppContext, fmt: str, reviewer=None, label=None, verdict=None, date_from=None,
                 date_to=None, text=None) -> tuple[str | None, str]:
    try:
        if fmt not in EXPORT_FORMATS:
            raise UserError("Export format must be csv or json.")
        rows = ctx.store.search(**_filters(reviewer, label, verdict, date_from, date_to, text), limit=None)
        path = ctx.new_file(f".{fmt}")
        (ctx.store.export_csv if fmt == "csv" else ctx.store.export_json)(path, rows)
    except (UserError, StoreError) as e:
        return None, error_status(e)
    except OSError as e:  # the export folder is full or read-only: the log itself is untouched
        return None, error_status(f"Could not write the export: {e.strerror or e}.")
    return str(path), ok_status(f"Exported {len(rows)} case(s) as {fmt.upper()}.")
