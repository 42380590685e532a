"""The Worklist tab: create (folder under the data root or uploads), step, read, double-read, batch, export."""
from __future__ import annotations

import csv
import dataclasses

import pytest

from visionclip_app import handlers as h
from visionclip_app.handlers import worklist as wl

from .support import is_error, render_to, small_table

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
CONDITIONS = ["normal", "glaucoma", "dr", "normal", "glaucoma"]


@pytest.fixture(scope="module")
def photo_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("root")
    (root / "clinic").mkdir()
    for i, cond in enumerate(CONDITIONS):
        render_to(root / "clinic" / f"eye_{i}.png", seed=30 + i, size=160, conditions=[cond])
    (root / "clinic" / "notes.txt").write_text("not an image")
    return root


@pytest.fixture
def wctx(ctx, photo_root):
    return dataclasses.replace(ctx, data_root=photo_root)


def _open(ctx, wid, pos, previous=None):
    return wl.open_item(ctx, wid, pos, small_table(), "gradcam", 0.5, "softmax", previous)


def test_folder_worklist_under_the_data_root_only(wctx, ctx, photo_root, tmp_path):
    dd, status = wl.create_worklist(wctx, "clinic", "clinic", None, 1)
    assert status.startswith(h.STATUS_OK) and "5 image(s)" in status
    wid = dd["value"]
    assert [it["image_path"] for it in wctx.store.worklist_items(wid)] == [
        str(photo_root / "clinic" / f"eye_{i}.png") for i in range(5)]
    for c, folder, msg in [(wctx, "../", "'..'"), (wctx, str(tmp_path), "outside the data root"),
                           (wctx, "missing", "No such folder"), (ctx, "clinic", "--data-root"),
                           (wctx, "", "Upload images or enter a folder")]:
        st = wl.create_worklist(c, "x", folder, None, 1)[1]
        assert is_error(st) and msg in st, (folder, st)
    assert len(wctx.store.worklists()) == 1


def test_uploaded_worklist_keeps_copies_under_neutral_names(ctx, photo_root):
    files = [str(photo_root / "clinic" / f"eye_{i}.png") for i in range(3)] + [str(photo_root / "clinic" / "notes.txt")]
    dd, status = wl.create_worklist(ctx, "uploads", "", files, 2)
    paths = [it["image_path"] for it in ctx.store.worklist_items(dd["value"])]
    assert status.startswith(h.STATUS_OK) and [p.rsplit("/", 1)[1] for p in paths] == ["00001.png", "00002.png",
                                                                                      "00003.png"]
    assert all(p.startswith(str(ctx.store.path.parent)) for p in paths)
    assert "None of the uploaded files is an image" in wl.create_worklist(ctx, "bad", "", [files[-1]], 1)[1]


def test_keyboard_journey_steps_reads_and_resumes(wctx):
    wid = wl.create_worklist(wctx, "clinic", "clinic", None, 1)[0]["value"]
    assert wl.start_position(wctx, wid, "Ann") == 1
    status, probs, overlay, item_md, progress, pos, state = _open(wctx, wid, 1)
    assert status.startswith(h.STATUS_OK) and pos == 1 and "Image **1 of 5**" in item_md
    assert "**0 of 5 reviewed** · 1 analysed, 4 pending" in progress
    st, progress = wl.save_reading(wctx, wid, 1, state, "Ann", "agree", [])
    assert st.startswith(h.STATUS_OK) and "**1 of 5 reviewed**" in progress
    assert wl.step(wctx, wid, 1, "next") == 2 and wl.step(wctx, wid, 1, "previous") == 1
    assert wl.step(wctx, wid, 5, "next") == 5
    wl.skip_item(wctx, wid, 2)
    assert wl.step(wctx, wid, 1, "next unreviewed", "Ann") == 3
    # a reading needs the item's own analysis on screen, and the review rules hold
    assert "Open the image first" in wl.save_reading(wctx, wid, 3, state, "Ann", "agree", [])[0]
    state3 = _open(wctx, wid, 3, state)[-1]
    assert "corrected label" in wl.save_reading(wctx, wid, 3, state3, "Ann", "disagree", [])[0]
    assert wl.save_reading(wctx, wid, 3, state3, "Ann", "ungradable", [])[0].startswith(h.STATUS_OK)
    assert wl.start_position(wctx, wid, "Ann") == 4  # coming back resumes at the first unread image
    assert "Choose a worklist" in wl.save_reading(wctx, None, 1, state, "A", "agree", [])[0]


def test_double_reading_is_independent_and_kappa_is_shown(wctx):
    wid = wl.create_worklist(wctx, "double", "clinic", None, 2)[0]["value"]
    for pos, (ann, bob) in enumerate([("agree", "agree"), ("agree", "ungradable"), ("ungradable", "ungradable")], 1):
        state = _open(wctx, wid, pos)[-1]
        assert wl.save_reading(wctx, wid, pos, state, "Ann", ann, [])[0].startswith(h.STATUS_OK)
        item_md = _open(wctx, wid, pos, state)[3]
        assert "readings 1 of 2" in item_md and "Ann" not in item_md and ann not in item_md  # blind to Ann
        assert "already read" in wl.save_reading(wctx, wid, pos, state, "ann", ann, [])[0]
        assert wl.save_reading(wctx, wid, pos, state, "Bob", bob, [])[0].startswith(h.STATUS_OK)
    assert wl.step(wctx, wid, 0, "next unreviewed", "Bob") == 4
    progress = wl.progress_markdown(wctx, wid)
    from sklearn.metrics import cohen_kappa_score
    preds = [it["predicted_label"] for it in wctx.store.worklist_items(wid)[:3]]
    ann = [preds[0], preds[1], "ungradable"]
    bob = [preds[0], "ungradable", "ungradable"]
    assert f"kappa **{cohen_kappa_score(ann, bob):.2f}** over 3 image(s)" in progress
    md = h.search_cases(wctx)[1]
    assert f"Worklist #{wid} double: inter-reader Cohen's kappa **{cohen_kappa_score(ann, bob):.2f}**" in md

    path, status = wl.export_worklist(wctx, wid, "csv")
    rows = list(csv.DictReader(open(path, encoding="utf-8")))
    assert [(r["position"], r["reviewer"], r["verdict"]) for r in rows] == [
        ("1", "Ann", "agree"), ("1", "Bob", "agree"), ("2", "Ann", "agree"), ("2", "Bob", "ungradable"),
        ("3", "Ann", "ungradable"), ("3", "Bob", "ungradable")]
    assert {r["model_id"] for r in rows} == {wctx.model.model_id} and all(len(r["prompt_set_sha256"]) == 64 for r in rows)
    assert "csv or json" in wl.export_worklist(wctx, wid, "xlsx")[1]


def test_batch_analysis_fills_a_filterable_table(wctx, photo_root):
    wid = wl.create_worklist(wctx, "batch", "clinic", None, 1)[0]["value"]
    (photo_root / "clinic" / "eye_4.png").rename(photo_root / "clinic" / "eye_4.bak")  # unreadable: skipped, not fatal
    try:
        calls = []
        status = wl.analyse_worklist(wctx, wid, small_table(), progress=lambda f, desc=None: calls.append(f))
    finally:
        (photo_root / "clinic" / "eye_4.bak").rename(photo_root / "clinic" / "eye_4.png")
    assert status.startswith(h.STATUS_OK) and "Analysed 4 image(s)" in status and "#5" in status
    assert calls and calls[-1] == 1.0
    items = wctx.store.worklist_items(wid)
    assert [it["state"] for it in items] == ["analysed"] * 4 + ["pending"]
    expected = wctx.model.classify([it["image_path"] for it in items[:4]], h.prompt_set_from_table(small_table()))
    assert [it["predicted_label"] for it in items[:4]] == [max(p, key=p.get) for p in expected]
    df, choices, st = wl.results_table(wctx, wid)
    assert list(df["#"]) == [1, 2, 3, 4, 5] and set(choices["choices"]) >= {"any", items[0]["predicted_label"]}
    label = items[0]["predicted_label"]
    df, _, st = wl.results_table(wctx, wid, label, "analysed")
    assert list(df["#"]) == [it["position"] for it in items if it["predicted_label"] == label]
    assert is_error(wl.results_table(wctx, wid, "any", "lost")[-1])


def test_batch_analysis_of_the_default_set_stores_the_screening_decision(wctx, photo_root):
    from engine import load_preset
    from engine.screening import hierarchical_prediction, screen

    wid = wl.create_worklist(wctx, "screened", "clinic", None, 1)[0]["value"]
    table = h.table_from_prompt_set(load_preset("screening"))
    assert wl.analyse_worklist(wctx, wid, table).startswith(h.STATUS_OK)
    items = wctx.store.worklist_items(wid)
    ps = h.prompt_set_from_table(table)
    emb = wctx.model.encode_images([it["image_path"] for it in items])
    probs = wctx.model.probabilities(emb, ps)
    expected = hierarchical_prediction(probs.numpy(), ps.classes, screen(wctx.model, emb, ps, probs))
    assert [it["predicted_label"] for it in items] == expected
    assert all(it["calibration"] is None for it in items)
    assert set(wl.results_table(wctx, wid)[0]["scoring"]) == {"per image"}


def test_batch_analysis_runs_the_models_image_runtime_for_the_whole_run(wctx, photo_root, monkeypatch):
    """The worklist asks the model for the tower of a run as long as its pending items (engine.image_runtime):
    the same choice `visionclip predict` makes, so a long worklist gets the faster runtime."""
    wid = wl.create_worklist(wctx, "runtime", "clinic", None, 1)[0]["value"]
    asked, real = [], wctx.model.image_tower_for

    def tower_for(images):
        asked.append(images)
        return real(images)

    monkeypatch.setattr(wctx.model, "image_tower_for", tower_for)
    monkeypatch.setattr(wctx.model, "image_runtime", "frozen")  # forced, so that 5 images get a frozen tower
    assert wl.analyse_worklist(wctx, wid, small_table()).startswith(h.STATUS_OK)
    assert asked == [5]
    monkeypatch.setattr(wctx.model, "image_runtime", "eager")
    items = wctx.store.worklist_items(wid)
    expected = wctx.model.classify([it["image_path"] for it in items], h.prompt_set_from_table(small_table()))
    assert [it["predicted_label"] for it in items] == [max(p, key=p.get) for p in expected]
