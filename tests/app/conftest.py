"""Fixtures of the app's handler tests: handlers are called as plain functions (no browser)."""
from __future__ import annotations

import pytest

from visionclip_app import handlers as h
from visionclip_app.store import CaseStore

from .support import render_to, small_table


@pytest.fixture(scope="module")
def model(default_model):
    """The session-wide default model from tests/conftest.py (loaded once per test session)."""
    return default_model


@pytest.fixture
def ctx(model, tmp_path):
    return h.AppContext.create(model, CaseStore(tmp_path / "cases.db"), tmp_path / "work")


@pytest.fixture(scope="module")
def fundus_path(tmp_path_factory):
    return render_to(tmp_path_factory.mktemp("img") / "patient_Jane_Doe_123.png")


@pytest.fixture(scope="module")
def analysed(model, fundus_path, tmp_path_factory):
    d = tmp_path_factory.mktemp("analysed")
    c = h.AppContext.create(model, CaseStore(d / "cases.db"), d / "work")
    out = h.analyse(c, fundus_path, small_table(), "gradcam", 0.5, None)
    assert c.store.count() == 0  # analysing logs nothing
    assert out[0].startswith(h.STATUS_OK), out[0]
    return out
