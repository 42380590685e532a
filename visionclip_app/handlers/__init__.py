"""Event handlers of the VisionCLIP app: plain functions over the engine's public API, one module per tab.

Every handler takes an :class:`AppContext` first and returns plain values (or ``gr.update`` dicts), so
it can be unit-tested without a browser. User mistakes never raise: a handler returns a one-line
status (prefixed with ``STATUS_ERROR``) and calls ``gr.Warning`` so the browser shows a toast.
"""
from engine.saliency_names import TARGETS as SALIENCY_TARGETS

from engine.adapt import DEFAULT_METHOD as DEFAULT_ADAPTER_METHOD
from engine.adapt import METHODS as ADAPTER_METHODS
from engine.adapt import default_method as default_adapter_method

from .adapters import (COMPARISON_COLUMNS, NO_ADAPTER, adapter_choices, adapters_dir, build_adapter_from_cases,
                       comparison_rows, describe_adapter, reviewed_counts, run_adapter_lab)
from .about import about_markdown, example_captions, example_images, model_card_summary, model_card_text
from .analyse import (QUALITY_OK_MD, analyse, method_for_detail, quality_markdown, saliency_methods,
                      decision_markdown, screening_headline, summary_markdown, update_saliency, warmup)
from .cases import (CASE_COLUMNS, EXPORT_FORMATS, HISTORY_COLUMNS, add_correction, agreement_figure, case_id_from_selection,
                    cases_frame, export_cases, open_case, search_cases)
from .common import (STATUS_ERROR, STATUS_OK, AppContext, CurrentAnalysis, UserError, error_status, ok_status,
                     one_line)
from .prompt_lab import EDITOR_CHOICE, NONE_CHOICE, make_synthetic_benchmark, run_prompt_lab
from .prompt_table import (PROMPT_COLUMNS, add_prompt_row, default_preset, delete_prompt_row, load_preset_table,
                           load_prompt_file, preset_names, prompt_set_from_table, save_prompt_file,
                           table_from_prompt_set)
from .review import save_review
from . import worklist

__all__ = [
    "AppContext", "CurrentAnalysis", "UserError", "STATUS_ERROR", "STATUS_OK", "error_status", "ok_status",
    "one_line", "SALIENCY_TARGETS",
    "PROMPT_COLUMNS", "table_from_prompt_set", "prompt_set_from_table", "add_prompt_row", "delete_prompt_row",
    "preset_names", "default_preset", "load_preset_table", "load_prompt_file", "save_prompt_file",
    "analyse", "update_saliency", "saliency_methods", "method_for_detail", "quality_markdown", "QUALITY_OK_MD",
    "summary_markdown", "warmup", "screening_headline", "decision_markdown",
    "save_review",
    "CASE_COLUMNS", "EXPORT_FORMATS", "HISTORY_COLUMNS", "search_cases", "open_case", "add_correction", "export_cases",
    "cases_frame", "agreement_figure", "case_id_from_selection",
    "EDITOR_CHOICE", "NONE_CHOICE", "run_prompt_lab", "make_synthetic_benchmark",
    "worklist",
    "NO_ADAPTER", "ADAPTER_METHODS", "DEFAULT_ADAPTER_METHOD", "default_adapter_method", "COMPARISON_COLUMNS", "adapter_choices", "adapters_dir", "build_adapter_from_cases", "comparison_rows",
    "describe_adapter", "reviewed_counts", "run_adapter_lab",
    "about_markdown", "model_card_summary", "model_card_text", "example_images", "example_captions",
]
