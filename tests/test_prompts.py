import json

import pytest

from engine import PromptSet, VisionCLIPError, list_presets, load_preset

SCREENING = [
    "normal", "diabetic retinopathy", "diabetic macular edema", "age-related macular degeneration", "glaucoma",
    "pathologic myopia", "hypertensive retinopathy", "retinal vein occlusion", "epiretinal membrane", "cataract",
    "optic atrophy",
]


def test_screening_preset_class_names():
    assert load_preset("screening").classes == SCREENING


def test_dr_grading_preset_is_ordered_five_grades():
    ps = load_preset("dr_grading")
    assert len(ps) == 5 and ps.ordered
    assert ps.classes[0].startswith("no ") and ps.classes[-1].startswith("proliferative")


def test_presets_cover_eval_folders():
    for name in ("screening", "dr_grading", "glaucoma", "eyedisease", "palm"):
        assert name in list_presets()


@pytest.mark.parametrize(
    "doc, message",
    [
        ({}, "empty"),
        ({"glaucoma": []}, "no prompts"),
        ({"glaucoma": ["  "]}, "blank prompt"),
        ({"": ["x"]}, "blank name"),
        ({"Glaucoma": ["a"], "glaucoma ": ["b"]}, "duplicate"),
        ({"glaucoma": [3]}, "not text"),
        ({"glaucoma": ["x" * 5000]}, "limit"),
    ],
)
def test_bad_prompt_sets(doc, message):
    with pytest.raises(VisionCLIPError, match=message):
        PromptSet.from_dict(doc)


def test_malformed_json_and_duplicate_keys(tmp_path):
    with pytest.raises(VisionCLIPError, match="not valid JSON"):
        PromptSet.from_json_text('{"a": ["x"],')
    with pytest.raises(VisionCLIPError, match="duplicate"):
        PromptSet.from_json_text('{"a": ["x"], "a": ["y"]}')
    with pytest.raises(VisionCLIPError, match="not found"):
        PromptSet.from_json(tmp_path / "missing.json")
    with pytest.raises(VisionCLIPError, match="JSON object"):
        PromptSet.from_json_text('["a", "b"]')


def test_round_trip_and_hash(tmp_path):
    ps = PromptSet({"normal": ["healthy retina"], "glaucoma": "large cup"}, name="mine")
    path = ps.save(tmp_path / "p.json")
    again = PromptSet.from_json(path)
    assert again == ps and again.sha256 == ps.sha256
    assert again["glaucoma"] == ["large cup"]
    edited = PromptSet({"normal": ["healthy retina"], "glaucoma": "large optic cup"})
    assert edited.sha256 != ps.sha256
    assert json.loads(ps.to_json())["classes"]["normal"] == ["healthy retina"]


# --- classes made of subclasses ----------------------------------------------------------------------
GROUPED = {"normal": ["healthy retina"],
           "diabetic retinopathy": {"diabetic retinopathy": ["microaneurysms", "exudates"],
                                    "hypertensive retinopathy": ["arteriolar narrowing"]}}


def test_subclasses_keep_reported_classes_and_scored_groups():
    ps = PromptSet(GROUPED)
    assert ps.classes == ["normal", "diabetic retinopathy"] and ps.has_subclasses
    assert ps["diabetic retinopathy"] == ["microaneurysms", "exudates", "arteriolar narrowing"]
    assert [(c, s) for c, s, _ in ps.scored_groups()] == [
        ("normal", "normal"), ("diabetic retinopathy", "diabetic retinopathy"),
        ("diabetic retinopathy", "hypertensive retinopathy")]
    assert ps.rows()[-1] == ("diabetic retinopathy > hypertensive retinopathy", "arteriolar narrowing")
    assert not PromptSet({"a": ["x"], "b": ["y"]}).has_subclasses


def test_subclasses_round_trip_and_change_the_hash(tmp_path):
    ps = PromptSet(GROUPED, name="grouped")
    again = PromptSet.from_json(ps.save(tmp_path / "g.json"))
    assert again == ps and again.sha256 == ps.sha256 and again.to_dict() == GROUPED
    flattened = PromptSet({c: ps[c] for c in ps.classes})  # same prompts, no subclasses: scored otherwise
    assert flattened != ps and flattened.sha256 != ps.sha256
    assert ps.subset(["diabetic retinopathy"]).subclasses("diabetic retinopathy") == GROUPED["diabetic retinopathy"]


@pytest.mark.parametrize(
    "doc, message",
    [
        ({"dr": {}}, "no subclasses"),
        ({"dr": {" ": ["x"]}}, "blank name"),
        ({"dr": {"HR": ["x"], "hr": ["y"]}}, "duplicate subclass"),
        ({"dr": {"hr": []}}, "subclass 'hr' has no prompts"),
        ({"dr": {"hr": ["  "]}}, "subclass 'hr' has a blank prompt"),
        ({"dr > hr": ["x"]}, "reserved"),
        ({"dr": {"a > b": ["x"]}}, "reserved"),
        ({"dr": {f"s{i}": ["x"] for i in range(201)}}, "classes and subclasses; the limit is 200"),
    ],
)
def test_bad_subclasses(doc, message):
    with pytest.raises(VisionCLIPError, match=message):
        PromptSet.from_dict(doc)


def test_grouped_eyedisease_preset_scores_the_folder_classes_through_screening_conditions():
    flat, grouped, screening = load_preset("eyedisease"), load_preset("eyedisease_grouped"), load_preset("screening")
    assert grouped.classes == flat.classes
    subs = [s for c in grouped.classes for s in grouped.subclasses(c)]
    assert set(subs) <= set(screening.classes) and len(subs) > len(flat)
    for c in grouped.classes:  # each class still holds its own prompts
        assert grouped.subclasses(c).get(c, grouped[c]) == flat[c]
