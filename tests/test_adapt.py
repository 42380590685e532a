"""Few-shot adapters, adapter files, reading reviewed cases, and the CLI."""
import copy
import json
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine import PromptSet, VisionCLIP, VisionCLIPError
from engine.adapt import Adapter, TextAnchor, make_head
from tests.conftest import make_fundus
from visionclip_app.store import read_reviewed_cases

CLASSES = ["normal", "glaucoma", "cataract"]
THREE = PromptSet({"normal": ["a healthy retina"], "glaucoma": ["a large optic cup"], "cataract": ["a blurry hazy fundus"]})
GROUPED = PromptSet({"normal": ["a healthy retina"],
                     "disease": {"glaucoma": ["a large optic cup"], "cataract": ["a blurry hazy fundus", "cataract"]}})


def balanced_accuracy(y, probs):
    pred = np.asarray(probs).argmax(1)
    return float(np.mean([(pred[y == c] == c).mean() for c in np.unique(y)]))


def toy(text_right: bool, n_per_class=60, dim=16, noise=0.35, seed=0, scale=20.0):
    """Embeddings of 3 classes around class means; text embeddings equal to the means (text right)
    or unrelated to them (text wrong)."""
    g = torch.Generator().manual_seed(seed)
    means = F.normalize(torch.randn(3, dim, generator=g), dim=-1)
    text = means if text_right else F.normalize(torch.randn(3, dim, generator=g), dim=-1)
    y = torch.arange(3).repeat_interleave(n_per_class)
    x = F.normalize(means[y] + noise * torch.randn(len(y), dim, generator=g), dim=-1)
    return x, y.numpy(), TextAnchor(text, torch.arange(3), scale, CLASSES)


def draw(y, k, rng):
    return np.concatenate([rng.choice(np.flatnonzero(y == c), k, replace=False) for c in np.unique(y)])


# --- the adapters ------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["clap", "blend", "linear-probe"])
def test_adapter_beats_zero_shot_when_the_text_is_wrong_and_the_classes_separable(method):
    # a wrong text that is not sure of itself either (zero-shot log-odds of a few units, as on real photographs)
    x, y, anchor = toy(text_right=False, scale=5.0)
    rng = np.random.default_rng(0)
    support = draw(y, 16, rng)
    test = np.setdiff1d(np.arange(len(y)), support)
    zs = balanced_accuracy(y[test], make_head("zero-shot").fit(x, y, anchor).predict_proba(x[test]))
    adapted = balanced_accuracy(y[test], make_head(method).fit(x[support], y[support], anchor).predict_proba(x[test]))
    assert adapted > zs + 0.2, (method, zs, adapted)


@pytest.mark.parametrize("method", ["clap", "blend"])
def test_one_shot_does_not_fall_below_zero_shot_when_the_text_is_right(method):
    x, y, anchor = toy(text_right=True, noise=0.6)
    zs = balanced_accuracy(y, make_head("zero-shot").fit(x, y, anchor).predict_proba(x))
    assert 0.6 < zs < 0.97  # the text is right, but not perfect: there is room to do worse
    scores = []
    for r in range(10):
        support = draw(y, 1, np.random.default_rng(r))
        scores.append(balanced_accuracy(y, make_head(method).fit(x[support], y[support], anchor).predict_proba(x)))
    assert np.mean(scores) >= zs - 0.01, (zs, scores)
    # the unanchored probe, as a reference, does fall below with one shot
    probe = [balanced_accuracy(y, make_head("linear-probe").fit(x[s], y[s], anchor).predict_proba(x))
             for s in (draw(y, 1, np.random.default_rng(r)) for r in range(10))]
    assert np.mean(probe) < np.mean(scores)


def test_clap_is_robust_to_an_imbalanced_support_set():
    """Adding 36 more images of one class to a 4-4-4 support set does not swallow the two small classes."""
    x, y, anchor = toy(text_right=False, n_per_class=80, scale=5.0)
    rng = np.random.default_rng(1)
    support = np.concatenate([rng.choice(np.flatnonzero(y == 0), 40, replace=False),
                              rng.choice(np.flatnonzero(y == 1), 4, replace=False),
                              rng.choice(np.flatnonzero(y == 2), 4, replace=False)])
    balanced = np.concatenate([support[:4], support[40:]])
    test = np.setdiff1d(np.arange(len(y)), support)

    def recalls(s):
        pred = make_head("clap").fit(x[s], y[s], anchor).predict_proba(x[test]).argmax(1).numpy()
        return [(pred[y[test] == c] == c).mean() for c in range(3)]
    imbalanced, even = recalls(support), recalls(balanced)
    assert imbalanced[1] >= even[1] - 0.05 and imbalanced[2] >= even[2] - 0.05, (imbalanced, even)
    assert imbalanced[0] > even[0]  # and the big class gains from its extra images


def test_anchor_and_zero_shot_head_reproduce_the_model_on_a_grouped_prompt_set(tiny_model):
    emb = tiny_model.encode_images([make_fundus(seed=s) for s in range(4)])
    expected = tiny_model.probabilities(emb, GROUPED)
    anchor = TextAnchor.from_model(tiny_model, GROUPED)
    assert anchor.classes == ["normal", "disease"] and len(anchor.embeddings) == 3
    torch.testing.assert_close(anchor.log_probs(emb).exp(), expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(make_head("zero-shot").fit(emb, [0, 1, 0, 1], anchor).predict_proba(emb), expected,
                               atol=1e-5, rtol=1e-4)
    adapter = Adapter.fit(tiny_model, emb, ["normal", "disease", "normal", "Disease"], GROUPED, method="clap")
    assert adapter.probabilities(emb).shape == (4, 2) and adapter.images_per_class == {"normal": 2, "disease": 2}


def test_class_with_no_examples_is_a_one_line_error():
    x, y, anchor = toy(text_right=True)
    with pytest.raises(VisionCLIPError, match="class 'cataract' has no examples"):
        make_head("clap").fit(x[y != 2], y[y != 2], anchor)
    with pytest.raises(VisionCLIPError, match="unknown adapter method"):
        make_head("tip-adapter")


# --- adapter files -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_model():
    import open_clip

    cfg = copy.deepcopy(open_clip.get_model_config("ViT-B-16"))
    cfg["embed_dim"] = 32
    cfg["vision_cfg"].update(image_size=64, layers=1, width=64, head_width=32, patch_size=16)
    cfg["text_cfg"].update(layers=1, width=32, heads=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return VisionCLIP.from_config(cfg, pretrained_towers=False)


@pytest.fixture(scope="module")
def fitted(tiny_model):
    images = [make_fundus(seed=s) for s in range(6)]
    emb = tiny_model.encode_images(images)
    labels = [CLASSES[i % 3] for i in range(6)]
    return emb, Adapter.fit(tiny_model, emb, labels, THREE, method="clap", provenance={"source": "test", "case_ids": [1, 2]})


@pytest.mark.parametrize("method", ["clap", "blend", "linear-probe", "zero-shot"])
def test_save_load_round_trip(tmp_path, tiny_model, fitted, method):
    emb, _ = fitted
    adapter = Adapter.fit(tiny_model, emb, [CLASSES[i % 3] for i in range(6)], THREE, method=method,
                          provenance={"source": "test", "case_ids": [1, 2]})
    path = adapter.save(tmp_path / "a.safetensors")
    assert path.stat().st_size < 200_000
    back = Adapter.load(path, tiny_model)
    torch.testing.assert_close(back.probabilities(emb), adapter.probabilities(emb))
    assert back.method == method and back.classes == CLASSES and back.prompt_set == THREE
    assert back.images_per_class == {"normal": 2, "glaucoma": 2, "cataract": 2}
    assert back.provenance == {"source": "test", "case_ids": [1, 2]} and back.base_model_id == tiny_model.model_id
    assert back.describe()["prompt_set_sha256"] == THREE.sha256 and back.created_at == adapter.created_at


def test_adapter_for_another_base_model_is_refused(tmp_path, tiny_model, fitted):
    _, adapter = fitted
    path = adapter.save(tmp_path / "a.safetensors")
    other = copy.copy(tiny_model)
    other.model_id = "visionclip-other-000000000000"
    with pytest.raises(VisionCLIPError, match=f"fitted on model {tiny_model.model_id}, not on visionclip-other"):
        Adapter.load(path, other)


def test_corrupt_or_foreign_adapter_files_are_one_line_errors(tmp_path, tiny_model, fitted):
    _, adapter = fitted
    good = adapter.save(tmp_path / "good.safetensors").read_bytes()
    (tmp_path / "noise.safetensors").write_bytes(b"\x00garbage" * 10)
    (tmp_path / "cut.safetensors").write_bytes(good[: len(good) // 2])
    tiny_model.save(tmp_path / "model.safetensors")
    for name, pattern in (("noise", "not a readable adapter file"), ("cut", "not a readable adapter file"),
                          ("model", "not a VisionCLIP adapter"), ("missing", "adapter file not found")):
        with pytest.raises(VisionCLIPError, match=pattern) as e:
            Adapter.load(tmp_path / f"{name}.safetensors", tiny_model)
        assert "\n" not in str(e.value)
    # a header edited by hand: the prompt set no longer matches its hash
    from safetensors.torch import load_file, save_file

    from engine.checkpoint import read_header
    header = read_header(tmp_path / "good.safetensors")
    header["prompt_set"] = THREE.subset(["normal", "glaucoma"]).to_json()
    save_file(load_file(str(tmp_path / "good.safetensors")), str(tmp_path / "edited.safetensors"), metadata=header)
    with pytest.raises(VisionCLIPError, match="does not match its recorded hash"):
        Adapter.load(tmp_path / "edited.safetensors", tiny_model)


def test_adapter_target_explains_the_adapted_probability(tiny_model, fitted):
    from engine.saliency import explain
    from engine.saliency.targets import AdapterTarget

    emb, adapter = fitted
    target = AdapterTarget(adapter, 1)
    torch.testing.assert_close(target(emb[0]), adapter.probabilities(emb[:1])[0, 1])
    e = emb[:1].clone().requires_grad_(True)
    target(e).sum().backward()
    assert e.grad.abs().sum() > 0  # differentiable: Grad-CAM can follow it
    res = explain(tiny_model, make_fundus(seed=1), THREE, "glaucoma", adapter=adapter)
    assert res.target == "adapter" and res.map.shape == (240, 320)
    expected = adapter.probabilities(tiny_model.encode_images([make_fundus(seed=1)]))[0, 1]
    assert res.probability == pytest.approx(float(expected), abs=1e-4)


# --- reviewed cases ----------------------------------------------------------------------------
def _log(store, image, reviewer, verdict, predicted, corrected=()):
    import hashlib
    import io

    from visionclip_app.store import CaseRecord, strip_and_thumbnail

    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return store.log_case(CaseRecord.of(
        reviewer=reviewer, verdict=verdict, image_sha256=hashlib.sha256(buf.getvalue()).hexdigest(),
        thumbnail=strip_and_thumbnail(image), prompt_set_json=THREE.to_json(), prompt_set_sha256=THREE.sha256,
        probabilities={c: 1 / 3 for c in CLASSES}, model_id="m", predicted_label=predicted,
        corrected_labels=list(corrected)))


@pytest.fixture
def case_db(tmp_path):
    from visionclip_app.store import CaseStore, Review

    store = CaseStore(tmp_path / "cases.db")
    big = make_fundus(size=(640, 480), seed=0)
    ids = {
        "agree": _log(store, big, "ann", "agree", "glaucoma"),
        "corrected": _log(store, make_fundus(seed=1), "ann", "disagree", "normal", ["cataract"]),
        "recorrected": _log(store, make_fundus(seed=2), "ann", "disagree", "normal", ["glaucoma"]),
        "ungradable": _log(store, make_fundus(seed=3), "ann", "ungradable", "normal"),
        "bob": _log(store, make_fundus(seed=5), "bob", "agree", "normal"),
        "relogged": _log(store, make_fundus(seed=6), "ann", "agree", "cataract"),
    }
    store.add_revision(ids["recorrected"], Review(reviewer="bob", verdict="disagree", corrected_labels=["cataract"]))
    ids["relogged_again"] = _log(store, make_fundus(seed=6), "ann", "disagree", "cataract", ["normal"])
    return tmp_path / "cases.db", ids


def test_reviewed_cases_take_the_latest_label_of_gradable_cases(case_db):
    path, ids = case_db
    cases = {c.case_id: c for c in read_reviewed_cases(path)}
    assert set(cases) == {ids["agree"], ids["corrected"], ids["recorrected"], ids["bob"], ids["relogged_again"]}
    assert cases[ids["agree"]].label == "glaucoma"  # agreed: the prediction
    assert cases[ids["corrected"]].label == "cataract"  # corrected
    assert cases[ids["recorrected"]].label == "cataract"  # the latest correction wins
    assert cases[ids["relogged_again"]].label == "normal"  # the same photograph logged twice counts once
    assert max(cases[ids["agree"]].image.size) == 256  # the stored thumbnail, not the 640 px original
    ann = {c.case_id: c.label for c in read_reviewed_cases(path, reviewer="ANN")}
    assert ann[ids["recorrected"]] == "glaucoma" and ids["bob"] not in ann  # ann's own latest review


def test_case_database_errors(tmp_path, case_db):
    from visionclip_app.store import CaseStore

    store = CaseStore(tmp_path / "empty.db")
    _log(store, make_fundus(seed=9), "ann", "ungradable", "normal")
    with pytest.raises(VisionCLIPError, match="no agreed or corrected, gradable cases"):
        read_reviewed_cases(tmp_path / "empty.db")
    with pytest.raises(VisionCLIPError, match="by reviewer 'carol'"):
        read_reviewed_cases(case_db[0], reviewer="carol")
    (tmp_path / "junk.db").write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(VisionCLIPError, match="not an SQLite database"):
        read_reviewed_cases(tmp_path / "junk.db")
    with pytest.raises(VisionCLIPError, match="case database not found"):
        read_reviewed_cases(tmp_path / "none.db")


# --- the command line --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_file(tmp_path_factory, tiny_model):
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    tiny_model.save(path)
    return path


def run_cli(capsys, *argv):
    from engine.cli import main

    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def run_app_cli(capsys, *argv):
    """``python -m visionclip_app ARGV``: the app owns the case log, so ``adapt --cases`` is its command."""
    from visionclip_app.cli import main

    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_adapt_predict_eval_explain_end_to_end(tmp_path, capsys, labelled_folder, model_file):
    three = tmp_path / "three.json"
    THREE.save(three)
    out = tmp_path / "mine.safetensors"
    code, stdout, err = run_cli(capsys, "adapt", "--data", labelled_folder, "--prompts", three, "--model", model_file,
                                "--out", out)
    assert code == 0, err
    assert "clap adapter" in stdout and "normal 2, glaucoma 2, cataract 2" in stdout and out.is_file()
    assert Adapter.load(out).provenance["source"] == "folder"

    images = sorted((labelled_folder / "img").glob("*.png"))
    code, stdout, err = run_cli(capsys, "predict", *images, "--adapter", out, "--model", model_file, "--json")
    doc = json.loads(stdout)
    assert code == 0 and doc["adapter"]["method"] == "clap"
    assert set(doc["results"][0]["probabilities"]) == set(CLASSES)

    code, stdout, err = run_cli(capsys, "eval", "--data", labelled_folder, "--adapter", out, "--model", model_file,
                                "--bootstrap", "0", "--json")
    doc = json.loads(stdout)
    assert code == 0 and doc["adapter"]["images_per_class"]["glaucoma"] == 2
    code, stdout, _ = run_cli(capsys, "eval", "--data", labelled_folder, "--prompts", three, "--model", model_file,
                              "--bootstrap", "0")
    assert "adapter" not in stdout  # never silently on
    with pytest.raises(SystemExit):  # label-free calibration left the product (research/transductive.py)
        run_cli(capsys, "predict", *images, "--model", model_file, "--transductive")

    overlay = tmp_path / "o.png"
    code, stdout, err = run_cli(capsys, "explain", images[0], "--class", "glaucoma", "--adapter", out,
                                "--model", model_file, "--out", overlay)
    assert code == 0 and "(adapter)" in stdout and overlay.is_file()


def test_cli_adapt_from_cases_and_its_errors(tmp_path, capsys, case_db, model_file, labelled_folder):
    three = tmp_path / "three.json"
    THREE.save(three)
    out = tmp_path / "cases.safetensors"
    code, stdout, err = run_app_cli(capsys, "adapt", "--cases", case_db[0], "--prompts", three, "--model", model_file,
                                    "--method", "blend", "--out", out)
    assert code == 0, err
    assert "thumbnails" in stdout and "256 px" in stdout
    adapter = Adapter.load(out)
    assert adapter.method == "blend" and sorted(adapter.provenance["case_ids"]) == sorted(
        c.case_id for c in read_reviewed_cases(case_db[0]))

    code, _, err = run_cli(capsys, "adapt", "--data", labelled_folder, "--prompts", three, "--all-classes",
                           "--model", model_file, "--out", tmp_path / "x.safetensors")
    assert code == 0  # every class of THREE has images here
    four = PromptSet({**THREE.to_dict(), "myopia": ["a myopic fundus"]})
    four.save(tmp_path / "four.json")
    for argv, pattern in (
        (["--data", labelled_folder, "--prompts", tmp_path / "four.json", "--all-classes"], "class 'myopia' has no examples"),
        (["--data", labelled_folder, "--out", tmp_path / "x.pt"], "must end in .safetensors"),
        (["--data", labelled_folder, "--reviewer", "ann"], "--reviewer goes with --cases"),
        (["--cases", case_db[0]], "python -m visionclip_app adapt --cases"),  # the engine never reads the log
    ):
        argv = [*argv, "--model", model_file] + ([] if "--out" in argv else ["--out", tmp_path / "y.safetensors"])
        code, _, err = run_cli(capsys, "adapt", *argv)
        assert code == 2 and pattern in err and len(err.strip().splitlines()) == 1, err
    code, _, err = run_cli(capsys, "predict", labelled_folder / "img" / "0.png", "--adapter", tmp_path / "cases.db",
                           "--model", model_file)
    assert code == 2 and "not a readable adapter file" in err
    code, _, err = run_cli(capsys, "predict", labelled_folder / "img" / "0.png", "--adapter", out, "--prompts", "palm",
                           "--model", model_file)
    assert code == 2 and "--prompts and --adapter cannot be combined" in err
