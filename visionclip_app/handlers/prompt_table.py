"""The prompt editor of the Analyse tab (also read by the Prompt lab): class | prompt rows <-> PromptSet."""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import pandas as pd

from engine import DEFAULT_PRESET, SUBCLASS_SEPARATOR, PromptSet, VisionCLIPError, list_presets, load_preset

from .common import AppContext, UserError, error_status, md_text, ok_status

PROMPT_COLUMNS = ["class", "prompt"]
APP_MAX_PROMPT_CHARS = 500          # the text tower reads ~77 tokens; 500 characters is already far past it
APP_MAX_CLASSES = 50
MAX_PROMPT_FILE_BYTES = 1_000_000


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


def _group_rows(table: Any) -> dict[str, Any]:
    """{class: [prompts]} or {class: {subclass: [prompts]}} from the rows, with a one-line error per bad row."""
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
        name, _, sub = cls.partition(SUBCLASS_SEPARATOR)
        if SUBCLASS_SEPARATOR in sub:
            raise UserError(f"Row {i}: a subclass has no subclasses of its own ('{cls}').")
        if isinstance(classes.get(name), list) and sub or isinstance(classes.get(name), dict) and not sub:
            raise UserError(f"Row {i}: class '{name}' has prompts both with and without a subclass; "
                            f"name a subclass on every row of '{name}', or on none.")
        if sub:
            classes.setdefault(name, {}).setdefault(sub, []).append(prompt)
        else:
            classes.setdefault(name, []).append(prompt)
    return classes


def prompt_set_from_table(table: Any) -> PromptSet:
    """Build a validated PromptSet from the editor's class | prompt rows (fully blank rows are ignored).

    A class cell "class > subclass" puts the prompt in a subclass; such a class's probability is
    the sum of its subclasses'."""
    classes = _group_rows(table)
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
    return with_default_screening(ps)


def with_default_screening(ps: PromptSet) -> PromptSet:
    """The table holds classes and prompts only: a set that keeps every class of the default preset screens
    with that preset's rule (its calibrated threshold), edited prompts included; any other set screens top-1."""
    preset = _default_preset_set()
    present = {c.lower() for c in ps.classes}
    if preset is None or preset.screening is None or not all(c.lower() in present for c in preset.classes):
        return ps
    return ps.with_screening(preset.screening)


@functools.lru_cache(maxsize=1)
def _default_preset_set() -> PromptSet | None:
    """The shipped default preset, read once (every analysis builds its prompt set from the table)."""
    try:
        return load_preset(DEFAULT_PRESET)
    except VisionCLIPError:
        return None


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
    return pd.DataFrame(rows, columns=PROMPT_COLUMNS), ok_status(f"Removed row {i} ({md_text(removed[0])}: {md_text(removed[1][:40])}).")


def preset_names() -> list[str]:
    try:
        return list_presets()
    except (OSError, VisionCLIPError):  # pragma: no cover - a build without presets still serves
        return []


def default_preset() -> str | None:
    names = preset_names()
    if DEFAULT_PRESET in names:
        return DEFAULT_PRESET
    return names[0] if names else None


def load_preset_table(name: str) -> tuple[Any, str]:
    try:
        ps = load_preset(name)
    except VisionCLIPError as e:
        return gr.update(), error_status(e)
    return table_from_prompt_set(ps), ok_status(f"Loaded preset '{name}' ({len(ps)} classes).")


def load_prompt_file(file_path: str | None) -> tuple[Any, str]:
    if not file_path:
        return gr.update(), error_status("Choose a prompt-set JSON file first.")
    try:
        p = Path(file_path)
        if p.stat().st_size > MAX_PROMPT_FILE_BYTES:
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
