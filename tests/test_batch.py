"""Batch prediction over folders (engine.batch): expansion, per-file errors, batching, progress."""
import numpy as np
import pytest
import torch

from engine import PromptSet, VisionCLIP, VisionCLIPError, load_preset
from engine.batch import expand_inputs, predict_files, prepare_inputs, summarise

from .conftest import make_fundus
from .test_dicom import write_dicom

PROMPTS = PromptSet({"normal": ["a healthy retina"], "glaucoma": ["a cupped optic disc"]})


@pytest.fixture(scope="module")
def tiny_model():
    return VisionCLIP.from_config(pretrained_towers=False)


@pytest.fixture
def photo_folder(tmp_path):
    """Good images at two depths, a corrupt JPEG, a text file named .png, notes, hidden files, DICOM."""
    root = tmp_path / "photos"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / ".thumbs").mkdir()
    make_fundus(seed=1).save(root / "b.png")
    make_fundus(seed=2).save(root / "a.jpg")
    make_fundus(seed=3).save(root / "sub" / "c.png")
    make_fundus(seed=4).save(root / "sub" / "deeper" / "d.tif")
    make_fundus(seed=5).save(root / ".thumbs" / "x.png")
    make_fundus(seed=6).save(root / ".hidden.png")
    good = (root / "a.jpg").read_bytes()
    (root / "corrupt.jpg").write_bytes(good[: len(good) // 3])
    (root / "fake.png").write_text("not an image at all")
    (root / "notes.txt").write_text("reading notes")
    write_dicom(root / "eye.dcm", np.asarray(make_fundus(seed=7)), ImageLaterality="R")
    write_dicom(root / "IM0001", np.asarray(make_fundus(seed=8)))  # DICOM without an extension
    return root


def test_folder_expands_to_its_image_files_sorted(photo_folder):
    flat = expand_inputs([photo_folder])
    assert [p.name for p in flat.files] == ["IM0001", "a.jpg", "b.png", "corrupt.jpg", "eye.dcm", "fake.png"]
    assert flat.ignored == 1  # notes.txt; hidden files and folders are not counted
    deep = expand_inputs([photo_folder], recursive=True)
    assert [p.relative_to(photo_folder).as_posix() for p in deep.files][-2:] == ["sub/c.png", "sub/deeper/d.tif"]
    assert len(deep.files) == 8
    named = expand_inputs([photo_folder / "notes.txt", photo_folder / "b.png"])  # files as given, in order
    assert [p.name for p in named.files] == ["notes.txt", "b.png"] and named.ignored == 0


def test_predict_files_reports_bad_files_and_goes_on(tiny_model, photo_folder):
    files = expand_inputs([photo_folder], recursive=True).files
    calls = []
    results = list(predict_files(tiny_model, files, PROMPTS, batch_size=3, progress=lambda d, t: calls.append((d, t))))
    assert [r["image"] for r in results] == [str(p) for p in files]  # one result per file, in order
    errors = {r["image"].rsplit("/", 1)[-1]: r["error"] for r in results if "error" in r}
    assert set(errors) == {"corrupt.jpg", "fake.png"}
    assert all("\n" not in e for e in errors.values()) and "corrupt or truncated" in errors["corrupt.jpg"]
    good = [r for r in results if "error" not in r]
    assert len(good) == 6
    for r in good:
        assert set(r["probabilities"]) == {"normal", "glaucoma"}
        assert sum(r["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert r["predicted"] == max(r["probabilities"], key=r["probabilities"].get)
    assert [r.get("laterality") for r in results if r["image"].endswith("eye.dcm")] == ["R"]
    assert calls == [(i, len(files)) for i in range(1, len(files) + 1)]
    assert summarise(results, ignored=1) == {"images": 8, "predicted": 6, "errors": 2, "ignored": 1}


def test_batching_does_not_change_the_probabilities(tiny_model, photo_folder):
    files = expand_inputs([photo_folder]).files[:5]  # a corrupt file in the middle of a batch too
    one_by_one = list(predict_files(tiny_model, files, PROMPTS, batch_size=1))
    together = list(predict_files(tiny_model, files, PROMPTS, batch_size=2))
    for a, b in zip(one_by_one, together):
        assert a.keys() == b.keys()
        if "probabilities" in a:
            assert np.allclose(list(a["probabilities"].values()), list(b["probabilities"].values()), atol=1e-5)


def test_grouped_prompts_give_subclass_probabilities(tiny_model, photo_folder):
    grouped = PromptSet({"normal": ["a healthy retina"], "disease": {"glaucoma": ["cupped disc"], "amd": ["drusen"]}})
    result = next(predict_files(tiny_model, [photo_folder / "b.png"], grouped))
    subs = result["subclass_probabilities"]
    assert subs["disease > glaucoma"] + subs["disease > amd"] == pytest.approx(result["probabilities"]["disease"], abs=1e-5)


def test_bad_batch_size_is_an_error(tiny_model, photo_folder):
    with pytest.raises(VisionCLIPError, match="batch size"):
        list(predict_files(tiny_model, [photo_folder / "b.png"], PROMPTS, batch_size=0))


def test_shipped_model_gives_the_same_probabilities_at_any_batch_size(default_model):
    """The threaded, channels-last, multi-pass batch path against one image at a time, on the example
    photographs and on renders: the target is |dP| <= 0.01; the path should be exact to float noise."""
    from engine.resources import asset_dir

    files = sorted(asset_dir("examples").glob("*.png"))
    images = [make_fundus(seed=s, size=(400, 300)) for s in range(3)]
    prompts = load_preset("screening")
    single = torch.cat([default_model.encode_images([x], batch_size=1) for x in [*files, *images]])
    batched = default_model.encode_images([*files, *images], batch_size=8)
    assert default_model.images_per_pass < 8  # a batch of 8 runs in several network passes on the CPU
    dp = (default_model.probabilities(single, prompts) - default_model.probabilities(batched, prompts)).abs().max()
    assert dp <= 1e-4
    rows = list(predict_files(default_model, files, prompts, batch_size=4))
    from engine.screening import hierarchical_prediction, screen

    one_by_one = default_model.probabilities(single[:len(files)], prompts)
    expected = hierarchical_prediction(one_by_one.numpy(), prompts.classes,
                                       screen(default_model, single[:len(files)], prompts, one_by_one))
    assert [r["predicted"] for r in rows] == expected  # normal, or the condition of a finding
    assert np.allclose([list(r["probabilities"].values()) for r in rows],
                       default_model.probabilities(single[:len(files)], prompts).numpy(), atol=1e-4)


def test_encode_images_raises_the_first_unreadable_image(tiny_model, photo_folder):
    with pytest.raises(VisionCLIPError, match="corrupt or truncated"):
        tiny_model.encode_images([photo_folder / "b.png", photo_folder / "corrupt.jpg", photo_folder / "a.jpg"])


def test_prepare_inputs_keeps_order_and_reads_only_a_bounded_number_ahead(tiny_model):
    pulled = []

    def sources():
        for s in range(40):
            pulled.append(s)
            yield make_fundus(seed=s % 3, size=(64, 48))

    stream = prepare_inputs(tiny_model, sources(), ahead=4, workers=2)
    first = next(stream)
    assert first.error is None and first.tensor.shape[0] == 3
    assert len(pulled) <= 5  # ``ahead`` in flight and the one handed over: memory stays bounded
    rest = list(stream)
    assert len(rest) == 39 and all(torch.equal(r.tensor, tiny_model.image_tensor(make_fundus(seed=i % 3, size=(64, 48))))
                                   for i, r in enumerate([first, *rest]) if i < 6)
