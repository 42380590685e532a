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
