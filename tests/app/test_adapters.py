"""Few-shot adapters in the app: build from reviewed cases, pick one in Analyse, compare in the Prompt lab;
and DICOM uploads through the Analyse handler."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from engine.adapt import Adapter
from engine.prompts import PromptSet
from visionclip_app import handlers as h
from visionclip_app.store import Analysis, CaseRecord, Review, strip_and_thumbnail

from ..test_dicom import write_dicom
from .support import is_error

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

CLASSES = {"normal": "a normal healthy fundus", "glaucoma": "a large optic cup", "cataract": "a hazy blurred fundus"}


def table():
    return pd.DataFrame(list(CLASSES.items()), columns=h.PROMPT_COLUMNS)


def examples(ctx):
    """(path, label) of the shipped synthetic examples of the three classes."""
    return [(p, label) for label in CLASSES for p in sorted(ctx.examples_dir.glob(f"synthetic_{label}_*.png"))]


@pytest.fixture(scope="module")
def fitted(model):
    """A linear-probe adapter (text unused, so it surely differs from zero-shot) on the shipped examples."""
    from visionclip_app.handlers.common import EXAMPLES_DIR
    items = [(p, label) for label in CLASSES for p in sorted(EXAMPLES_DIR.glob(f"synthetic_{label}_*.png"))]
    ps = h.prompt_set_from_table(table())
    emb = model.encode_images([p for p, _ in items])
    return Adapter.fit(model, emb, [lab for _, lab in items], ps, method="linear-probe")


@pytest.fixture
def with_adapter(ctx, fitted):
    d = h.adapters_dir(ctx)
    d.mkdir(parents=True, exist_ok=True)
    fitted.save(d / "mine.safetensors")
    return ctx, "mine.safetensors"


def log_case(ctx, path, predicted, reviewer, verdict, corrected=()):
    image = Image.open(path).convert("RGB")
    an = Analysis(image_sha256=f"{path}-{predicted}", thumbnail=strip_and_thumbnail(image), prompt_set_json="{}",
                  prompt_set_sha256="x", probabilities={predicted: 1.0}, model_id=ctx.model.model_id,
                  predicted_label=predicted)
    return ctx.store.log_case(CaseRecord(an, Review(reviewer=reviewer, verdict=verdict, corrected_labels=corrected)))


def test_build_adapter_from_reviewed_cases_with_counts(ctx):
    ex = examples(ctx)
    for path, label in ex:  # agreed: the prediction was right
        log_case(ctx, path, label, "Ann", "agree")
    normal = next(p for p, lab in ex if lab == "normal")
    log_case(ctx, normal.with_name("synthetic_amd_14.png"), "normal", "Bob", "disagree", ["glaucoma"])  # corrected
    log_case(ctx, normal.with_name("synthetic_dr_12.png"), "normal", "Bob", "ungradable")  # left out
    counts, status = h.reviewed_counts(ctx)
    assert counts == {"cataract": 1, "glaucoma": 2, "normal": 1}, status
    assert status.startswith(h.STATUS_OK) and "4 reviewed case(s)" in status
    assert h.reviewed_counts(ctx, "ann")[0] == {"cataract": 1, "glaucoma": 1, "normal": 1}

    assert h.adapter_choices(ctx) == [h.NO_ADAPTER]
    status, update = h.build_adapter_from_cases(ctx, table(), reviewer="")
    assert status.startswith(h.STATUS_OK), status
    name = update["value"]
    assert name.startswith("adapter_") and name.endswith("_clap.safetensors") and "Ann" not in name
    assert h.adapter_choices(ctx) == [h.NO_ADAPTER, name] and update["choices"] == h.adapter_choices(ctx)
    assert "normal 1, glaucoma 2, cataract 1" in status
    adapter = Adapter.load(h.adapters_dir(ctx) / name, ctx.model)
    assert adapter.images_per_class == {"normal": 1, "glaucoma": 2, "cataract": 1}
    assert adapter.provenance["source"] == "cases" and len(adapter.provenance["case_ids"]) == 4

    # one reviewer's cases only; "Bob" has one usable case: a single class cannot make an adapter
    status, update = h.build_adapter_from_cases(ctx, table(), reviewer="Bob")
    assert is_error(status) and "two or more classes" in status and "normal" in status and update == {"__type__": "update"}
    assert len(h.adapter_choices(ctx)) == 2  # nothing written


def test_build_without_reviews_is_a_one_line_error(ctx):
    status, _ = h.build_adapter_from_cases(ctx, table())
    assert is_error(status) and "no agreed or corrected" in status
    counts, status = h.reviewed_counts(ctx, "nobody")
    assert counts == {} and is_error(status)
    assert not h.adapters_dir(ctx).exists() or h.adapter_choices(ctx) == [h.NO_ADAPTER]


def test_build_leaves_out_classes_without_examples(ctx):
    ex = examples(ctx)
    for path, label in ex:
        if label != "cataract":
            log_case(ctx, path, label, "Ann", "agree")
    log_case(ctx, ex[0][0].with_name("synthetic_amd_14.png"), "normal", "Ann", "disagree", ["retinal detachment"])
    status, update = h.build_adapter_from_cases(ctx, table())
    assert status.startswith(h.STATUS_OK) and "Left out (no reviewed example): cataract" in status
    assert Adapter.load(h.adapters_dir(ctx) / update["value"]).classes == ["normal", "glaucoma"]
    assert "labels not in the prompt set left out: retinal detachment" in status


def test_analyse_with_adapter_shows_both_and_explains_adapted_score(with_adapter):
    ctx, name = with_adapter
    path = str(examples(ctx)[0][0])
    assert h.adapter_choices(ctx) == [h.NO_ADAPTER, name]
    zs = h.analyse(ctx, path, table(), "gradcam", 0.5, None)
    assert zs[-1].zero_shot is None and h.comparison_rows(zs[-1]) == [] and zs[-1].analysis.adapter is None
    out = h.analyse(ctx, path, table(), "gradcam", 0.5, None, adapter_choice=name)
    status, probs, state = out[0], out[1], out[-1]
    assert status.startswith(h.STATUS_OK) and "**Adapted**" in status and name in status and "zero-shot: " in status
    assert set(probs) == set(CLASSES) and state.zero_shot == pytest.approx(zs[1], abs=1e-5)  # same classes, same image
    assert not np.allclose([probs[c] for c in CLASSES], [state.zero_shot[c] for c in CLASSES], atol=1e-3)
    rows = h.comparison_rows(state)
    assert [r[0] for r in rows] == sorted(probs, key=probs.get, reverse=True)
    assert rows[0][1:] == [round(state.zero_shot[rows[0][0]], 4), round(probs[rows[0][0]], 4)]
    assert state.analysis.saliency_target == "adapter" and out[3] is not None  # the map explains the adapted score
    assert "the map explains the adapted score" in status and len(status) < 300
    assert f"adapted by `{name}`" in h.summary_markdown(state)
    overlay, st, state2 = h.update_saliency(ctx, state, "glaucoma", "gradcam", 0.5)
    assert st.startswith(h.STATUS_OK) and state2.analysis.saliency_target == "adapter"

    _, case_id = h.save_review(ctx, state, "Ann", "agree", [], 0.9, "", False, "")
    case = ctx.store.get_case(case_id)
    logged = json.loads(case["adapter"])
    assert logged["file"] == name and len(logged["sha256"]) == 64 and logged["method"] == "linear-probe"
    assert logged["zero_shot_probabilities"] == pytest.approx(state.zero_shot)
    assert json.loads(case["probabilities"]) == pytest.approx(probs)
    assert f"Adapted by `{name}` (linear-probe, SHA-256 `{logged['sha256'][:12]}`)" in h.open_case(ctx, case_id)[2]
    _, zs_case = h.save_review(ctx, zs[-1], "Ann", "agree", [], 0.9, "", False, "")
    assert ctx.store.get_case(zs_case)["adapter"] is None and "Adapted" not in h.open_case(ctx, zs_case)[2]
    import csv
    path, _ = h.export_cases(ctx, "csv")
    exported = {int(r["id"]): r["adapter"] for r in csv.DictReader(open(path, encoding="utf-8"))}
    assert json.loads(exported[case_id])["file"] == name and exported[zs_case] == ""


def test_bad_adapter_file_is_one_line_and_app_keeps_working(with_adapter, fitted):
    ctx, name = with_adapter
    (h.adapters_dir(ctx) / "broken.safetensors").write_bytes(b"not a safetensors file at all")
    path = str(examples(ctx)[0][0])
    assert "broken.safetensors" in h.adapter_choices(ctx)
    out = h.analyse(ctx, path, table(), "gradcam", 0.5, None, adapter_choice="broken.safetensors")
    assert is_error(out[0]) and "Adapter not usable" in out[0] and out[-1] is None
    assert is_error(h.describe_adapter(ctx, "broken.safetensors"))
    for bad in ("../cases.db", "gone.safetensors"):
        assert is_error(h.analyse(ctx, path, table(), "gradcam", 0.5, None, adapter_choice=bad)[0])
    assert h.analyse(ctx, path, table(), "gradcam", 0.5, None, adapter_choice=h.NO_ADAPTER)[0].startswith(h.STATUS_OK)
    assert h.analyse(ctx, path, table(), "gradcam", 0.5, None, adapter_choice=name)[0].startswith(h.STATUS_OK)
    assert "linear-probe adapter fitted on 3 real images" in h.describe_adapter(ctx, name)
    Adapter(fitted.head, fitted.prompt_set, "another-model", fitted.images_per_class).save(
        h.adapters_dir(ctx) / "other.safetensors")
    out = h.analyse(ctx, path, table(), "gradcam", 0.5, None, adapter_choice="other.safetensors")
    assert is_error(out[0]) and "fitted on model another-model" in out[0]


def test_prompt_lab_compares_zero_shot_and_adapter(with_adapter, tmp_path):
    ctx, name = with_adapter
    ctx = dataclasses.replace(ctx, data_root=tmp_path)
    d = tmp_path / "data"
    d.mkdir()
    from engine.synth import render_fundus
    conds = {"normal": "normal", "glaucoma": "glaucoma", "cataract": "cataract"}
    rows = []
    for i in range(6):
        label = list(conds)[i % 3]
        Image.fromarray(render_fundus(100 + i, 128, [conds[label]]).image).save(d / f"{i}.png")
        rows.append(f"{i}.png,{label}")
    (d / "labels.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    md_a, fig_a, md_b, fig_b, status = h.run_adapter_lab(ctx, "data", name, resamples=100)
    assert status.startswith(h.STATUS_OK) and "6 images" in status, status
    assert "zero-shot" in md_a and "| images | 6 |" in md_a and "95% CI" in md_a and fig_a is not None
    assert name in md_b and "B - A (paired)" in md_b and fig_b is not None
    for folder, choice, msg in [("data", h.NO_ADAPTER, "Choose an adapter"), ("../x", name, ".."),
                                ("nothere", name, "No labels.csv")]:
        out = h.run_adapter_lab(ctx, folder, choice, resamples=100)
        assert is_error(out[-1]) and msg in out[-1], out[-1]


def test_dicom_upload_is_analysed_with_laterality_and_no_patient_data(ctx, tmp_path):
    from engine.synth import render_fundus
    rgb = render_fundus(3, 256).image
    dcm = write_dicom(tmp_path / "exam.dcm", rgb, ImageLaterality="L")
    out = h.analyse(ctx, str(dcm), table(), "gradcam", 0.5, None)
    status, state = out[0], out[-1]
    assert status.startswith(h.STATUS_OK) and "DICOM laterality: left eye" in status, status
    assert "Doe" not in status and "MRN123" not in status and "Doe" not in h.summary_markdown(state)
    assert state.image.size == (256, 256)
    _, case_id = h.save_review(ctx, state, "Ann", "agree", [], 0.9, "", False, "")
    case = ctx.store.get_case(case_id)
    assert "Doe" not in json.dumps({k: v for k, v in case.items() if isinstance(v, str)})
    assert case["original_filename"] is None  # the thumbnail is rebuilt from pixels (tests/test_store.py)
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(dcm.read_bytes()[:400])
    assert is_error(h.analyse(ctx, str(broken), table(), "gradcam", 0.5, None)[0])


def test_ui_wiring_dicom_upload_and_adapter_through_the_served_app(model, fitted, tmp_path):
    """The built app: /analyse takes an adapter name and a DICOM file (the browser's .dcm upload box)."""
    from gradio_client import Client, handle_file

    from engine.synth import render_fundus
    from tests.local_server import free_port
    from visionclip_app.store import CaseStore
    from visionclip_app.ui import build_ui

    ctx = h.AppContext.create(model, CaseStore(tmp_path / "cases.db"), tmp_path / "work")
    h.adapters_dir(ctx).mkdir()
    fitted.save(h.adapters_dir(ctx) / "mine.safetensors")
    demo = build_ui(ctx)
    dicom_box = next(c for c in demo.blocks.values() if getattr(c, "elem_id", None) == "dicom-in")
    assert ".dcm" in dicom_box.file_types
    demo.queue()
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                            share=False, ssr_mode=False)
    try:
        dcm = write_dicom(tmp_path / "exam.dcm", render_fundus(4, 192).image, ImageLaterality="R")
        t = table()
        status, probs, *_ = Client(url, verbose=False).predict(
            None, {"headers": list(t.columns), "data": t.values.tolist()}, "gradcam", 0.5, None, "softmax", False,
            "mine.safetensors", handle_file(str(dcm)), api_name="/analyse")
    finally:
        demo.close()
    assert status.startswith(h.STATUS_OK) and "**Adapted**" in status and "right eye" in status, status
    assert {c["label"] for c in probs["confidences"]} == set(CLASSES)
