"""The app's scripting API through gradio_client against the app launched in-process on 127.0.0.1."""
from __future__ import annotations

import csv

import pytest
from gradio_client import Client, handle_file

from visionclip_app import handlers as h
from tests.local_server import free_port
from visionclip_app.store import CaseStore

from .support import render_to

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::ResourceWarning")

PUBLIC = {"/analyse", "/explain", "/save_review", "/search_cases", "/export_cases"}


@pytest.fixture(scope="module")
def served(model, tmp_path_factory):
    from visionclip_app.ui import build_ui
    d = tmp_path_factory.mktemp("api")
    ctx = h.AppContext.create(model, CaseStore(d / "cases.db"), d / "work")
    demo = build_ui(ctx)
    demo.queue()
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                            share=False, ssr_mode=False)
    try:
        yield ctx, url, render_to(d / "eye.png", seed=5, size=256, conditions=["glaucoma"])
    finally:
        demo.close()


def test_only_the_documented_endpoints_are_listed_and_callable(served):
    _, url, _ = served
    client = Client(url, verbose=False)
    assert set(client.view_api(print_info=False, return_format="dict")["named_endpoints"]) == PUBLIC
    with pytest.raises(Exception):  # internal events (the prompt lab here) are private
        client.predict("synthetic", "", 4, 0, h.EDITOR_CHOICE, h.NONE_CHOICE, None, api_name="/do_lab")


def test_a_script_analyses_explains_reviews_searches_and_exports(served):
    ctx, url, image = served
    client = Client(url, verbose=False)
    table = h.table_from_prompt_set(h.prompt_set_from_table(
        [["normal", "a healthy retina"], ["glaucoma", "a large optic cup"], ["cataract", "a hazy fundus"]]))
    status, probs, original, overlay, quality, cls, summary, _ = client.predict(
        handle_file(image), {"headers": list(table.columns), "data": table.values.tolist()}, "gradcam", 0.5, None,
        "softmax", False, api_name="/analyse")
    assert status.startswith(h.STATUS_OK), status
    predicted = probs["label"]
    assert {c["label"] for c in probs["confidences"]} == {"normal", "glaucoma", "cataract"}
    assert cls["value"] == predicted and predicted in summary  # the saliency class starts at the prediction

    other = next(c for c in ("normal", "glaucoma", "cataract") if c != predicted)
    overlay2, status, summary = client.predict(other, "gradcam", 0.5, "similarity", False, api_name="/explain")
    assert status.startswith(h.STATUS_OK) and f"/ {other}" in summary

    status, case_id = client.predict("Script", "disagree", [other], 0.7, "by script", False, "",
                                     api_name="/save_review")
    assert status.startswith(h.STATUS_OK) and int(case_id) >= 1
    case = ctx.store.get_case(int(case_id))
    assert (case["reviewer"], case["saliency_class"], case["saliency_target"]) == ("Script", other, "similarity")

    status, _ = client.predict("Script", "disagree", [], 0.7, "", False, "", api_name="/save_review")
    assert status.startswith(h.STATUS_ERROR) and "corrected label" in status

    df, agreement, _, status = client.predict("Script", "", "any", "", "", "", api_name="/search_cases")
    assert [int(r[0]) for r in df["data"]] == [int(case_id)] and "1 case(s)" in agreement

    path, status = client.predict("csv", "Script", "", "any", "", "", "", api_name="/export_cases")
    rows = list(csv.DictReader(open(path, encoding="utf-8")))
    assert [(int(r["id"]), r["verdict"]) for r in rows] == [(int(case_id), "disagree")]
