"""The Analyse tab's prompt editor: rows <-> PromptSet, presets, prompt-set files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from engine import load_preset
from visionclip_app import handlers as h

from .support import is_error, small_table

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


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
    assert h.prompt_set_from_table(table) == grouped  # the table holds the whole set
    assert any(" > " in c for c in table["class"])
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
    assert status.startswith(h.STATUS_OK) and h.prompt_set_from_table(table) == load_preset(name)
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
    assert "UTF-8" in h.load_prompt_file(str(bad))[1]
    assert is_error(h.load_prompt_file(None)[1])
    assert is_error(h.save_prompt_file(ctx, [])[1])


def test_add_and_delete_rows():
    t = h.add_prompt_row(small_table())
    assert len(t) == 5 and list(t.iloc[-1]) == ["diabetic retinopathy", ""]
    t2, st = h.delete_prompt_row(t, 1)
    assert st.startswith(h.STATUS_OK) and len(t2) == 4 and t2.iloc[0, 0] == "glaucoma"
    assert is_error(h.delete_prompt_row(t, 99)[1])
    assert is_error(h.delete_prompt_row(t, None)[1])
