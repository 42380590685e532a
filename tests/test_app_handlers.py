"""Handlers of the VisionCLIP app, called as plain functions (no browser).

Bad input never raises: it returns a one-line status starting with STATUS_ERROR and logs nothing.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from engine import load_preset
from visionclip_app import handlers as h
from visionclip_app.store import CaseStore

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def model(default_model):
    """The session-wide default model from tests/conftest.py (loaded once per test session)."""
    return default_model


@pytest.fixture
def ctx(model, tmp_path):
    return h.AppContext.create(model, CaseStore(tmp_path / "cases.db"), tmp_path / "work")


@pytest.fixture(scope="module")
def fundus_path(tmp_path_factory):
    from engine.synth import render_fundus
    p = tmp_path_factory.mktemp("img") / "patient_Jane_Doe_123.png"
    Image.fromarray(render_fundus(7, 384).image).save(p)
    return str(p)


def small_table():
    return pd.DataFrame([["normal", "a normal healthy fundus"], ["glaucoma", "glaucoma"],
                         ["glaucoma", "large optic cup"], ["diabetic retinopathy", "haemorrhages and exudates"]],
                        columns=h.PROMPT_COLUMNS)


@pytest.fixture(scope="module")
def analysed(model, fundus_path, tmp_path_factory):
    d = tmp_path_factory.mktemp("analysed")
    c = h.AppContext.create(model, CaseStore(d / "cases.db"), d / "work")
    out = h.analyse(c, fundus_path, small_table(), "gradcam", 0.5, None)
    assert c.store.count() == 0  # analysing logs nothing
    assert out[0].startswith(h.STATUS_OK), out[0]
    return out


def is_error(status):
    return isinstance(status, str) and status.startswith(h.STATUS_ERROR) and "\n" not in status


# ---------------------------------------------------------------------------------------- prompt table
def test_prompt_set_from_table_groups_rows_and_skips_blank_rows():
    t = small_table()
    t.loc[len(t)] = ["", ""]
    t.loc[len(t)] = [None, np.nan]
    ps = h.prompt_set_from_table(t)
    assert ps.classes == ["normal", "glaucoma", "diabetic retinopathy"]
    assert ps["glaucoma"] == ["glaucoma", "large optic cup"]
    assert h.prompt_set_from_table([["a", "x"], ["b", "y"]]).classes == ["a", "b"]


def test_prompt_table_names_subclasses_class_then_subclass():
    grouped = load_preset("eyedisease_grouped")
    table = h.table_from_prompt_set(grouped)
    assert "diabetic retinopathy > hypertensive retinopathy" in set(table["class"])
    assert h.prompt_set_from_table(table) == grouped  # the table holds the whole set
    ps = h.prompt_set_from_table([["normal", "healthy"], ["dr > dr", "microaneurysms"], ["dr > hr", "narrow arterioles"]])
    assert ps.classes == ["normal", "dr"] and list(ps.subclasses("dr")) == ["dr", "hr"]


@pytest.mark.parametrize("rows, msg", [
    ([], "empty"),
    ([["", ""]], "empty"),
    ([["a", "x"], ["A", "y"]], "Duplicate class"),
    ([["a", "x"], ["b", "y" * 5000]], "limit"),
    ([["a", "x"], ["b", ""]], "blank"),
    ([["a", "x"], ["", "y"]], "blank"),
    ([["a", "x"]], "two classes"),
    ([["a", "x"], ["b > c", "y"], ["b", "z"]], "both with and without a subclass"),
    ([["a", "x"], ["b", "z"], ["b > c", "y"]], "both with and without a subclass"),
    ([["a", "x"], ["b > c > d", "y"]], "no subclasses of its own"),
    ([["a", "x"], ["b > c", "y"], ["b > C", "z"]], "duplicate subclass"),
    ([["a", "x"]] + [[f"b > s{i}", "y"] for i in range(60)], "Too many subclasses"),
])
def test_prompt_table_errors(rows, msg):
    with pytest.raises(h.UserError, match=msg):
        h.prompt_set_from_table(pd.DataFrame(rows, columns=h.PROMPT_COLUMNS) if rows else rows)


def test_presets_and_prompt_files(ctx, tmp_path):
    name = h.default_preset()
    assert name in h.preset_names()
    table, status = h.load_preset_table(name)
    assert status.startswith(h.STATUS_OK) and len(table) > 2
    assert is_error(h.load_preset_table("no-such-preset")[1])
    path, status = h.save_prompt_file(ctx, small_table())
    assert status.startswith(h.STATUS_OK) and Path(path).parent.parent == ctx.work_dir
    table2, status = h.load_prompt_file(path)
    assert status.startswith(h.STATUS_OK)
    assert h.prompt_set_from_table(table2) == h.prompt_set_from_table(small_table())
    bad = tmp_path / "bad.json"
    bad.write_text('{"a": ["x"], "a": ["y"]}')
    assert is_error(h.load_prompt_file(str(bad))[1])
    bad.write_text("not json")
    assert is_error(h.load_prompt_file(str(bad))[1])
    bad.write_bytes(b"\xff\xfe\x00")
    assert is_error(h.load_prompt_file(str(bad))[1])
    assert is_error(h.load_prompt_file(None)[1])
    assert is_error(h.save_prompt_file(ctx, [])[1])


def test_add_and_delete_rows():
    t = h.add_prompt_row(small_table())
    assert len(t) == 5 and list(t.iloc[-1]) == ["diabetic retinopathy", ""]
    t2, st = h.delete_prompt_row(t, 1)
    assert st.startswith(h.STATUS_OK) and len(t2) == 4 and t2.iloc[0, 0] == "glaucoma"
    assert is_error(h.delete_prompt_row(t, 99)[1])
    assert is_error(h.delete_prompt_row(t, None)[1])


# ---------------------------------------------------------------------------------------- analyse
def test_analyse_returns_probabilities_overlay_and_state(ctx, analysed, fundus_path):
    status, probs, original, overlay, quality_md, dd, state = analysed
    assert set(probs) == {"normal", "glaucoma", "diabetic retinopathy"}
    assert abs(sum(probs.values()) - 1) < 1e-4
    assert isinstance(original, Image.Image)
    assert isinstance(overlay, Image.Image) and overlay.size == original.size
    assert dd["choices"] == list(probs) and dd["value"] == max(probs, key=probs.get)
    assert state["predicted_label"] == max(probs, key=probs.get)
    assert len(state["image_sha256"]) == 64
    assert state["saliency_method"] == "gradcam" and state["saliency_class"] == dd["value"]
    assert "quality" in quality_md.lower() or "ungradable" in quality_md.lower()


def test_reanalyse_after_prompt_edit_reencodes_only_the_new_prompt(ctx, fundus_path, analysed):
    before = ctx.model.text_encodings
    t = small_table()
    t.iloc[0, 1] = "a completely normal retina photograph"
    out = h.analyse(ctx, fundus_path, t, "gradcam", 0.5, None)
    assert out[0].startswith(h.STATUS_OK)
    assert ctx.model.text_encodings - before == 1


def test_saliency_target_similarity_or_softmax_and_bad_target(ctx, analysed, fundus_path):
    state = analysed[-1]
    assert state["saliency_target"] == "softmax"  # default: why this class rather than the others
    overlay, status, state2 = h.update_saliency(ctx, state, state["saliency_class"], "gradcam", 0.5, "similarity")
    assert status.startswith(h.STATUS_OK) and state2["saliency_target"] == "similarity"
    assert state2["saliency_thumbnail"] != state["saliency_thumbnail"]  # another score, another map
    assert is_error(h.update_saliency(ctx, state, "glaucoma", "gradcam", 0.5, "logits")[1])
    out = h.analyse(ctx, fundus_path, small_table(), "gradcam", 0.5, None, "logits")
    assert is_error(out[0]) and "saliency target" in out[0] and out[-1] is None


def test_update_saliency(ctx, analysed):
    state = analysed[-1]
    overlay, status, state2 = h.update_saliency(ctx, state, "glaucoma", "gradcam++", 0.3)
    assert status.startswith(h.STATUS_OK) and isinstance(overlay, Image.Image)
    assert state2["saliency_class"] == "glaucoma" and state2["saliency_method"] == "gradcam++"
    assert is_error(h.update_saliency(ctx, None, "glaucoma", "gradcam", 0.5)[1])
    assert is_error(h.update_saliency(ctx, state, "nope", "gradcam", 0.5)[1])
    assert is_error(h.update_saliency(ctx, state, "glaucoma", "bogus", 0.5)[1])
    assert is_error(h.update_saliency(ctx, state, "glaucoma", "gradcam", 7)[1])


def test_lesion_level_detail(ctx, analysed, fundus_path):
    state = analysed[-1]
    method = h.method_for_detail(True, "gradcam")
    assert method == "gradcam-elementwise" and h.method_for_detail(True, "hirescam") == "hirescam"
    assert h.method_for_detail(False, method) == "gradcam" and h.method_for_detail(False, "layercam") == "layercam"
    overlay, status, state2 = h.update_saliency(ctx, state, "glaucoma", method, 0.5, "softmax", True)
    assert status.startswith(h.STATUS_OK) and isinstance(overlay, Image.Image)
    assert state2["saliency_method"] == "gradcam-elementwise (detail)"
    out = h.analyse(ctx, fundus_path, small_table(), method, 0.5, None, "softmax", True)
    assert out[0].startswith(h.STATUS_OK) and out[-1]["saliency_method"] == "gradcam-elementwise (detail)"
    # a wrong form value is a one-line error that keeps the current analysis
    overlay, status, kept = h.update_saliency(ctx, state, "glaucoma", method, 0.5, "softmax", "yes please")
    assert is_error(status) and "detail" in status and kept is state
    out = h.analyse(ctx, fundus_path, small_table(), method, 0.5, None, "softmax", 3)
    assert is_error(out[0]) and out[-1] is None


def _bad_files(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello, not an image")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    buf = io.BytesIO()
    Image.new("RGB", (300, 300), (200, 100, 50)).save(buf, format="PNG")
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return [str(text), str(empty), str(corrupt), str(tmp_path / "missing.png"), None]


def test_analyse_with_subclasses_shows_what_the_predicted_class_is_made_of(ctx, fundus_path):
    subclasses = {"healthy": ["normal", "no disease"], "vascular": ["diabetic retinopathy", "hypertensive retinopathy"]}
    table = pd.DataFrame([[f"{c} > {sub}", f"a fundus photograph showing {sub}"] for c, subs in subclasses.items()
                          for sub in subs], columns=h.PROMPT_COLUMNS)
    status, probs, *_, state = h.analyse(ctx, fundus_path, table, "gradcam", 0.5, "vascular")
    assert status.startswith(h.STATUS_OK) and set(probs) == set(subclasses)
    assert probs == pytest.approx(ctx.model.classify([state["image"]], state["prompt_set"])[0], abs=1e-5)
    assert state["saliency_class"] == "vascular"
    predicted = state["predicted_label"]
    breakdown = status.split(f"{predicted} is the sum of: ")[1]
    assert all(sub in breakdown for sub in subclasses[predicted])
    assert "is the sum of" not in h.analyse(ctx, fundus_path, small_table(), "gradcam", 0.5, None)[0]


def test_analyse_bad_uploads(ctx, tmp_path):
    for path in _bad_files(tmp_path):
        out = h.analyse(ctx, path, small_table(), "gradcam", 0.5, None)
        assert is_error(out[0]), (path, out[0])
        assert out[-1] is None
    assert ctx.store.count() == 0


def test_analyse_upload_size_limit(model, tmp_path, fundus_path):
    c = h.AppContext.create(model, CaseStore(tmp_path / "c.db"), tmp_path / "w", max_upload_mb=0.001)
    out = h.analyse(c, fundus_path, small_table(), "gradcam", 0.5, None)
    assert is_error(out[0]) and "limit" in out[0]


@pytest.mark.parametrize("table, method, opacity, msg", [
    (pd.DataFrame([], columns=h.PROMPT_COLUMNS), "gradcam", 0.5, "empty"),
    (pd.DataFrame([["a", "x"], ["A", "y"]], columns=h.PROMPT_COLUMNS), "gradcam", 0.5, "Duplicate"),
    (pd.DataFrame([["a", "x" * 10_000], ["b", "y"]], columns=h.PROMPT_COLUMNS), "gradcam", 0.5, "limit"),
    (None, "gradcam", 0.5, "empty"),
    ("small", "nonsense", 0.5, "method"),
    ("small", "gradcam", 3.0, "Opacity"),
    ("small", "gradcam", "abc", ""),
])
def test_analyse_bad_form_values(ctx, fundus_path, table, method, opacity, msg):
    table = small_table() if isinstance(table, str) else table
    out = h.analyse(ctx, fundus_path, table, method, opacity, None)
    assert is_error(out[0]) and msg in out[0]


def test_ungradable_warning(ctx, tmp_path):
    p = tmp_path / "dark.png"
    Image.new("RGB", (256, 256), (3, 3, 3)).save(p)
    out = h.analyse(ctx, str(p), small_table(), "gradcam", 0.5, None)
    assert out[0].startswith(h.STATUS_OK)
    assert "ungradable" in out[4].lower()
    assert out[-1]["quality"]["gradable"] is False


# ---------------------------------------------------------------------------------------- review
def test_save_review_logs_everything_but_identifiers(ctx, analysed):
    state = analysed[-1]
    status, cid = h.save_review(ctx, state, "Dr Who", "disagree", ["glaucoma"], 0.7, "cup looks big",
                                opt_in=False, patient_id="P-42")
    assert status.startswith(h.STATUS_OK) and cid
    case = ctx.store.get_case(cid)
    assert case["reviewer"] == "Dr Who" and case["verdict"] == "disagree"
    assert json.loads(case["corrected_labels"]) == ["glaucoma"]
    assert case["original_filename"] is None and case["patient_id"] is None
    assert case["image_sha256"] == state["image_sha256"]
    assert json.loads(case["probabilities"]) == pytest.approx(state["probabilities"])
    assert case["prompt_set_sha256"] == state["prompt_set_sha256"]
    assert json.loads(case["prompt_set_json"])["glaucoma"] == ["glaucoma", "large optic cup"]
    assert case["model_id"] == ctx.model.model_id and case["predicted_label"] == state["predicted_label"]
    assert case["saliency_method"] == "gradcam" and case["saliency_class"]
    assert case["saliency_target"] == "softmax"  # the default, logged so the thumbnail can be reproduced
    thumb = Image.open(io.BytesIO(case["thumbnail"]))
    assert max(thumb.size) <= 256 and not thumb.getexif() and b"Jane" not in case["thumbnail"]
    assert case["saliency_thumbnail"]


def test_save_review_opt_in_stores_file_name_only_not_path(ctx, analysed):
    status, cid = h.save_review(ctx, analysed[-1], "Dr Who", "agree", [], 0.9, "", opt_in=True, patient_id="P-42")
    case = ctx.store.get_case(cid)
    assert case["original_filename"] == "patient_Jane_Doe_123.png" and case["patient_id"] == "P-42"


@pytest.mark.parametrize("state_ok, reviewer, verdict, labels, conf, notes, msg", [
    (False, "Dr", "agree", [], 0.5, "", "analyse an image"),
    (True, "  ", "agree", [], 0.5, "", "reviewer"),
    (True, "Dr", "perhaps", [], 0.5, "", "verdict"),
    (True, "Dr", None, [], 0.5, "", "verdict"),
    (True, "Dr", "disagree", [], 0.5, "", "corrected label"),
    (True, "Dr", "agree", [], 1.7, "", "Confidence"),
    (True, "Dr", "agree", [], "high", "", "Confidence"),
    (True, "Dr", "agree", [], float("nan"), "", "Confidence"),
    (True, "Dr", "agree", [], 0.5, "x" * 6000, "Notes"),
    (True, "D" * 150, "agree", [], 0.5, "", "too long"),
])
def test_save_review_rejects_bad_values(ctx, analysed, state_ok, reviewer, verdict, labels, conf, notes, msg):
    status, cid = h.save_review(ctx, analysed[-1] if state_ok else None, reviewer, verdict, labels, conf, notes)
    assert is_error(status) and msg.lower() in status.lower() and cid is None
    assert ctx.store.count() == 0


# ---------------------------------------------------------------------------------------- cases
def test_search_open_correct_and_export(ctx, analysed):
    state = analysed[-1]
    _, a = h.save_review(ctx, state, "Ann", "agree", [], 0.9, "first")
    _, b = h.save_review(ctx, state, "Bob", "disagree", ["glaucoma"], 0.6, "second")
    df, md, fig, status = h.search_cases(ctx)
    assert status.startswith(h.STATUS_OK) and list(df["id"]) == [b, a]
    assert "agreement" in md and fig is not None
    df, *_ = h.search_cases(ctx, reviewer="bob")
    assert list(df["id"]) == [b]
    df, *_ = h.search_cases(ctx, verdict="agree")
    assert list(df["id"]) == [a]
    df, *_ = h.search_cases(ctx, label="glaucoma")
    assert b in list(df["id"])
    assert is_error(h.search_cases(ctx, date_from="yesterday")[-1])
    assert is_error(h.search_cases(ctx, date_from="2030-01-02", date_to="2030-01-01")[-1])
    assert is_error(h.search_cases(ctx, verdict="sure")[-1])
    df, *_ = h.search_cases(ctx, date_to="2000-01-01")
    assert df.empty

    thumb, sal, md, hist, status = h.open_case(ctx, b)
    assert isinstance(thumb, Image.Image) and isinstance(sal, Image.Image)
    assert f"Case #{b}" in md and len(hist) == 1
    assert is_error(h.open_case(ctx, 9999)[-1]) and is_error(h.open_case(ctx, None)[-1])
    assert h.case_id_from_selection(df_all := h.search_cases(ctx)[0], [1, 3]) == a and df_all is not None

    st = h.add_correction(ctx, b, "Cy", "agree", "", 0.8, "on reflection fine")
    assert st.startswith(h.STATUS_OK) and "revision 2" in st
    assert is_error(h.add_correction(ctx, b, "Cy", "disagree", "", 0.8, ""))
    assert is_error(h.add_correction(ctx, None, "Cy", "agree", "", 0.8, ""))
    assert is_error(h.add_correction(ctx, 9999, "Cy", "agree", "", 0.8, ""))
    assert len(ctx.store.history(b)) == 2

    path, status = h.export_cases(ctx, "csv")
    rows = list(csv.DictReader(open(path, encoding="utf-8")))
    assert status.startswith(h.STATUS_OK) and len(rows) == 2
    assert {r["reviewer"] for r in rows} == {"Ann", "Cy"}
    assert Path(path).name.startswith("visionclip_") and Path(path).parent.parent == ctx.work_dir
    path, _ = h.export_cases(ctx, "json", reviewer="Ann")
    doc = json.loads(Path(path).read_text())
    assert [c["id"] for c in doc["cases"]] == [a]
    assert is_error(h.export_cases(ctx, "xlsx")[1])


# ---------------------------------------------------------------------------------------- prompt lab, about
def test_prompt_lab_synthetic_two_sets(ctx, monkeypatch):
    calls, encoded = [], []
    encode = ctx.model.encode_images
    monkeypatch.setattr(ctx.model, "encode_images", lambda images, **kw: encoded.append(len(images)) or encode(images, **kw))
    md_a, fig_a, md_b, fig_b, status = h.run_prompt_lab(
        ctx, "synthetic", "", 12, 0, h.default_preset(), h.EDITOR_CHOICE, small_table(),
        progress=lambda f, desc=None: calls.append(f))
    assert status.startswith(h.STATUS_OK), status
    assert "accuracy" in md_a and "accuracy" in md_b and fig_a is not None and fig_b is not None
    assert calls and max(calls) <= 1.0 + 1e-9
    assert encoded == [12]  # the images are encoded once for both prompt sets
    assert "95% CI" in md_a and "B - A (paired)" in md_b and "B - A" not in md_a


def test_prompt_lab_folder_and_errors(ctx, tmp_path):
    d = tmp_path / "data"
    (d / "img").mkdir(parents=True)
    from engine.synth import render_fundus
    with (d / "labels.csv").open("w") as fh:
        fh.write("path,label\n")
        for i, (cond, lab) in enumerate([("normal", "normal"), ("glaucoma", "glaucoma")] * 2):
            Image.fromarray(render_fundus(i, 128, [cond]).image).save(d / "img" / f"{i}.png")
            fh.write(f"img/{i}.png,{lab}\n")
    out = h.run_prompt_lab(ctx, "folder", str(d), 0, 0, h.EDITOR_CHOICE, h.NONE_CHOICE, small_table())
    assert out[-1].startswith(h.STATUS_OK), out[-1]
    assert out[2] == "" and out[3] is None
    assert is_error(h.run_prompt_lab(ctx, "folder", str(tmp_path / "nope"), 0, 0, h.EDITOR_CHOICE,
                                     h.NONE_CHOICE, small_table())[-1])
    assert is_error(h.run_prompt_lab(ctx, "folder", "", 0, 0, h.EDITOR_CHOICE, h.NONE_CHOICE, small_table())[-1])
    assert is_error(h.run_prompt_lab(ctx, "synthetic", "", 1, 0, h.EDITOR_CHOICE, h.NONE_CHOICE, small_table())[-1])
    assert is_error(h.run_prompt_lab(ctx, "synthetic", "", "many", 0, h.EDITOR_CHOICE, h.NONE_CHOICE,
                                     small_table())[-1])
    assert is_error(h.run_prompt_lab(ctx, "synthetic", "", 8, 0, h.EDITOR_CHOICE, h.NONE_CHOICE, [])[-1])
    assert is_error(h.run_prompt_lab(ctx, "synthetic", "", 8, 0, "no-such", h.NONE_CHOICE, [])[-1])


def test_about_and_examples(ctx):
    md = h.about_markdown(ctx)
    assert "not a medical device" in md and "100% synthetic" in md and "Real patient images" in md
    assert "gradio" in md and ctx.model.model_id in md
    caps = h.example_captions(ctx)
    assert caps and all(Path(p).is_file() for p, _ in caps)


def test_build_ui_constructs(ctx):
    import gradio as gr
    from visionclip_app.ui import build_ui
    demo = build_ui(ctx)
    assert isinstance(demo, gr.Blocks)


# ---------------------------------------------------------------------------------------- command line
def test_cli_args_auth_and_host_warnings(tmp_path):
    from visionclip_app import cli
    a = cli.parse_args([])
    assert (a.host, a.port, a.db, a.model, a.max_upload_mb) == ("127.0.0.1", 7860, "visionclip_cases.db", None, 25.0)
    assert cli.parse_auth(a) is None
    assert cli.parse_auth(cli.parse_args(["--auth", "ann:s3:cret"])) == [("ann", "s3:cret")]
    f = tmp_path / "users.txt"
    f.write_text("# reviewers\nann:pw1\nbob:pw2\n")
    assert cli.parse_auth(cli.parse_args(["--auth-file", str(f)])) == [("ann", "pw1"), ("bob", "pw2")]
    for bad in (["--auth", "nopassword"], ["--auth", ":pw"], ["--auth-file", str(tmp_path / "missing")]):
        with pytest.raises(SystemExit):
            cli.parse_auth(cli.parse_args(bad))
    for bad in (["--port", "0"], ["--max-upload-mb", "-1"], ["--auth", "a:b", "--auth-file", str(f)]):
        with pytest.raises(SystemExit):
            cli.parse_args(bad)
    assert cli.host_warnings("127.0.0.1", None) == [] and cli.host_warnings("localhost", None) == []
    assert len(cli.host_warnings("0.0.0.0", None)) == 2
    assert len(cli.host_warnings("0.0.0.0", [("a", "b")])) == 1


def test_cli_main_launches_locally_without_share(model, tmp_path, monkeypatch, capsys):
    import gradio as gr
    import engine
    from visionclip_app import cli
    from visionclip_app import handlers as hh
    seen = {}
    monkeypatch.setattr(engine.VisionCLIP, "load", classmethod(lambda cls, path=None, device=None: model))
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kw: seen.update(kw))
    monkeypatch.setattr(hh, "warmup", lambda ctx: 0.0)
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))  # restored after the test
    rc = cli.main(["--host", "0.0.0.0", "--port", "7999", "--db", str(tmp_path / "c.db"), "--auth", "a:b",
                   "--max-upload-mb", "5"])
    assert rc == 0
    assert seen["share"] is False and seen["server_name"] == "0.0.0.0" and seen["server_port"] == 7999
    assert seen["auth"] == [("a", "b")] and seen["max_file_size"] == 5 * 1024 * 1024
    assert "WARNING: binding to 0.0.0.0" in capsys.readouterr().err
    assert (tmp_path / "c.db").exists()


def test_concurrent_sessions_analyse_and_log(ctx, fundus_path):
    """Several sessions at once (as gradio's worker threads would run them): all succeed, all are logged."""
    from concurrent.futures import ThreadPoolExecutor

    def session(k):
        out = h.analyse(ctx, fundus_path, small_table(), "gradcam", 0.5, None)
        assert out[0].startswith(h.STATUS_OK), out[0]
        return h.save_review(ctx, out[-1], f"reviewer {k}", "agree", [], 0.5, "")[1]

    with ThreadPoolExecutor(4) as pool:
        ids = list(pool.map(session, range(4)))
    assert all(ids) and ctx.store.count() == 4


def test_neutral_upload_names():
    from visionclip_app.uploads import UploadNames, rewrite_multipart
    names = UploadNames(capacity=2)
    body = (b"--XyZ\r\nContent-Disposition: form-data; name=\"files\"; filename=\"C:\\\\scans\\\\Jane Doe MRN1.JPG\"\r\n"
            b"Content-Type: image/jpeg\r\n\r\nfilename=\"keep-me-in-data\"\r\n"
            b"--XyZ\r\nContent-Disposition: form-data; name=\"files\"; filename=\"notes.exe\"\r\n\r\nMZ\r\n--XyZ--\r\n")
    out = rewrite_multipart(body, b"XyZ", names)
    assert b"Jane" not in out and b"notes" not in out
    assert b'filename="keep-me-in-data"' in out  # file data untouched
    import re as _re
    new = [m.decode() for m in _re.findall(rb'filename="(upload-[0-9a-f]{16}[^"]*)"', out)]
    assert len(new) == 2 and new[0].endswith(".jpg") and "." not in new[1]
    assert names.original_name(f"/tmp/x/{new[0]}") == "Jane Doe MRN1.JPG"
    assert names.original_name("/tmp/x/upload-0000000000000000.png") is None
    assert names.original_name("photo.png") is None
    names.neutral_name("a.png")
    assert names.original_name(new[0]) is None  # evicted: bounded memory
