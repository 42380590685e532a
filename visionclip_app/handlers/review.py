"""The Review tab: log the current analysis with the reviewer's verdict (the rules live in store.Review)."""
from __future__ import annotations

from typing import Any

from ..store import CaseRecord, Review, StoreError
from .common import AppContext, CurrentAnalysis, error_status, ok_status


def save_review(ctx: AppContext, state: CurrentAnalysis | None, reviewer: str, verdict: str, corrected: Any,
                confidence: Any, notes: str, opt_in: bool = False, patient_id: str = "") -> tuple[str, int | None]:
    """Log the current analysis with its review; returns (status, case id or None)."""
    if not isinstance(state, CurrentAnalysis):
        return error_status("Nothing to save: analyse an image on the Analyse tab first."), None
    review = Review(reviewer=reviewer, verdict=verdict, corrected_labels=corrected, confidence=confidence,
                    notes=notes)
    try:
        case_id = ctx.store.log_case(CaseRecord(state.analysis, review, store_identifiers=bool(opt_in),
                                                patient_id=patient_id or None))
    except StoreError as e:
        return error_status(e), None
    return ok_status(f"Saved case #{case_id} ({review.verdict})."), case_id
