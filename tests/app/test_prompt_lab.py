"""The Prompt lab tab: one or two prompt sets on a generated benchmark or a labelled folder."""
from __future__ import annotations

import dataclasses

import pytest
from PIL import Image

from visionclip_app import handlers as h

from .support import is_error, small_table

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_prompt_lab_synthetic_two_sets(ctx, monkeypatch):
    calls, encoded = [], []
    encode = ctx.model.encode_images
    monkeypatch.setattr(ctx.model, "encode_images", lambda images, **kw: encoded.append(len(images)) or encode(images, **kw))
    md_a, fig_a, md_b, fig_b, status = h.run_prompt_lab(
        ctx, "synthetic", "", 12, 0, h.default_preset(), h.EDITOR_CHOICE, small_table(),
        progress=lambda f, desc=None: calls.append(f))
    assert status == f"{h.STATUS_OK} Evaluated 2 prompt set(s) on 12 images.", status
    assert "| images | 12 |" in md_a and "| images | 12 |" in md_b and fig_a is not None and fig_b is not None
    assert calls and max(calls) <= 1.0 + 1e-9
    assert encoded == [12]  # the images are encoded once for both prompt sets
    assert "95% CI" in md_a and "B - A (paired)" in md_b and "B - A" not in md_a


def test_prompt_lab_folder_under_the_data_root_and_errors(ctx, tmp_path):
    ctx = dataclasses.replace(ctx, data_root=tmp_path)
    d = tmp_path / "data"
    (d / "img").mkdir(parents=True)
    from engine.synth import render_fundus
    with (d / "labels.csv").open("w") as fh:
        fh.write("path,label\n")
        for i, (cond, lab) in enumerate([("normal", "normal"), ("glaucoma", "glaucoma")] * 2):
            Image.fromarray(render_fundus(i, 128, [cond]).image).save(d / "img" / f"{i}.png")
            fh.write(f"img/{i}.png,{lab}\n")
    out = h.run_prompt_lab(ctx, "folder", "data", 0, 0, h.EDITOR_CHOICE, h.NONE_CHOICE, small_table())
    assert out[-1] == f"{h.STATUS_OK} Evaluated 1 prompt set(s) on 4 images.", out[-1]
    assert out[2] == "" and out[3] is None
    for args, msg in [
        (("folder", "nope", 0, 0, h.EDITOR_CHOICE, h.NONE_CHOICE, small_table()), "No labels.csv"),
        (("folder", "/etc", 0, 0, h.EDITOR_CHOICE, h.NONE_CHOICE, small_table()), "outside the data root"),
        (("folder", "../x", 0, 0, h.EDITOR_CHOICE, h.NONE_CHOICE, small_table()), "'..'"),
        (("folder", "", 0, 0, h.EDITOR_CHOICE, h.NONE_CHOICE, small_table()), "Enter the path"),
        (("synthetic", "", 1, 0, h.EDITOR_CHOICE, h.NONE_CHOICE, small_table()), "between 4 and 2000"),
        (("synthetic", "", "many", 0, h.EDITOR_CHOICE, h.NONE_CHOICE, small_table()), "whole numbers"),
        (("synthetic", "", 8, 0, h.EDITOR_CHOICE, h.NONE_CHOICE, []), "empty"),
        (("synthetic", "", 8, 0, "no-such", h.NONE_CHOICE, []), "no-such"),
    ]:
        st = h.run_prompt_lab(ctx, *args)[-1]
        assert is_error(st) and msg in st, (args[:3], st)


def test_prompt_lab_folders_are_off_without_a_data_root(ctx, tmp_path):
    st = h.run_prompt_lab(ctx, "folder", str(tmp_path), 0, 0, h.EDITOR_CHOICE, h.NONE_CHOICE, small_table())[-1]
    assert is_error(st) and "--data-root" in st
