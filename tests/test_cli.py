"""The CLI as a user runs it: JSON output, one-line errors, exit codes. Each test runs the command in
process (the fast tier: the default model loaded once) and, in the full suite, in a subprocess too."""
import json
import subprocess
import sys
import types
import warnings

import pytest

from .conftest import make_fundus


def run_cli(*args, timeout=240):
    return subprocess.run([sys.executable, "-m", "engine.cli", *map(str, args)], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(params=["in-process", pytest.param("subprocess", marks=pytest.mark.slow)])
def cli(request, monkeypatch, capsys):
    """``cli(*args)`` -> (returncode, stdout, stderr), in this process or in a fresh one."""
    if request.param == "subprocess":
        return run_cli
    from engine import cli as engine_cli
    from engine import memory
    from engine.model import VisionCLIP

    default_model = request.getfixturevalue("default_model")
    load = VisionCLIP.load.__func__
    monkeypatch.setattr(VisionCLIP, "load", classmethod(
        lambda cls, path=None, *a, **k: default_model if path is None else load(cls, path, *a, **k)))
    monkeypatch.setattr(memory, "keep_freed_memory", lambda: None)  # no process-wide malloc tuning in the test worker
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # main() replaces it

    def run(*args, timeout=None):
        capsys.readouterr()
        try:
            code = engine_cli.main([str(a) for a in args])
        except SystemExit as e:  # argparse: --help, usage errors
            code = e.code or 0
        out, err = capsys.readouterr()
        return types.SimpleNamespace(returncode=code, stdout=out, stderr=err)
    return run


def test_help_lists_commands():
    r = run_cli("--help")
    assert r.returncode == 0
    for cmd in ("predict", "eval"):
        assert cmd in r.stdout


def test_help_and_usage_errors_do_not_import_torch():
    # torch takes seconds to import: --help and a mistyped option answer without it
    probe = ("import sys\nfrom engine.cli import main\n"
             "for argv in (['--help'], ['predict', '--help'], ['predict']):\n"
             "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
             "print('torch' in sys.modules, file=sys.stderr)")
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert "--runtime {eager,frozen,onnx,auto}" in r.stdout
    assert r.stderr.strip().splitlines()[-1] == "False"


def test_the_engine_exports_resolve_on_first_use():
    import engine

    for name in engine.__all__:
        assert getattr(engine, name) is not None
    assert engine.VisionCLIP is __import__("engine.model", fromlist=["VisionCLIP"]).VisionCLIP
    assert {"VisionCLIP", "load_preset"} <= set(dir(engine))
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        engine.nothing_here


def test_predict_and_eval_json(cli, tmp_path, labelled_folder):
    img = tmp_path / "eye.png"
    make_fundus().save(img)
    r = cli("predict", img, "--json", "--prompts", "glaucoma")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert set(out["results"][0]["probabilities"]) == {"normal", "glaucoma"}
    assert "subclass_probabilities" not in out["results"][0]

    r = cli("predict", img, "--json", "--prompts", "eyedisease_grouped")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)["results"][0]
    subs = result["subclass_probabilities"]
    assert "diabetic retinopathy > hypertensive retinopathy" in subs and "normal" in subs
    dr = sum(p for name, p in subs.items() if name.startswith("diabetic retinopathy > "))
    assert dr == pytest.approx(result["probabilities"]["diabetic retinopathy"], abs=1e-5)

    r = cli("eval", "--data", labelled_folder, "--json", "--plot", tmp_path / "cm.png")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["n"] == 6 and set(res) >= {"balanced_accuracy", "mean_auc", "kappa", "confusion_matrix", "ci95"}
    assert (tmp_path / "cm.png").exists()
    r = cli("eval", "--data", labelled_folder)
    assert r.returncode == 0 and "balanced_accuracy" in r.stdout and "(95% CI " in r.stdout


@pytest.mark.parametrize(
    "setup, args, message",
    [
        (lambda d: (d / "x.txt").write_text("hi"), ["predict", "{d}/x.txt"], "not a readable image"),
        (lambda d: (d / "p.json").write_text("{"), ["predict", "{img}", "--prompts", "{d}/p.json"], "not valid JSON"),
        (lambda d: (d / "p.json").write_text("{}"), ["predict", "{img}", "--prompts", "{d}/p.json"], "empty"),
        (lambda d: None, ["predict", "{img}", "--model", "{d}/none.safetensors"], "not found"),
        (lambda d: None, ["eval", "--data", "{d}/nowhere"], "not found"),
        (lambda d: None, ["eval", "--data", "{d}", "--bootstrap", "-5"], "bootstrap must be a whole number"),
        (lambda d: None, ["explain", "{img}", "--class", "glaucoma", "--layers", "trunk.nope", "--out", "{d}/o.png"],
         "unknown target layer 'trunk.nope'"),
    ],
)
def test_bad_input_is_one_line_error(cli, tmp_path, setup, args, message):
    img = tmp_path / "eye.png"
    make_fundus().save(img)
    setup(tmp_path)
    r = cli(*[a.format(d=tmp_path, img=img) for a in args])
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout
    assert message in (r.stderr + r.stdout)


def test_explain_lesion_detail_writes_overlay(cli, tmp_path):
    img = tmp_path / "eye.png"
    make_fundus().save(img)
    out = tmp_path / "map.png"
    r = cli("explain", img, "--class", "diabetic retinopathy", "--method", "gradcam-elementwise", "--layers", "detail",
                "--out", out)
    assert r.returncode == 0, r.stderr
    from PIL import Image

    assert Image.open(out).size == Image.open(img).size


def test_predict_folder_writes_csv_json_and_a_summary_and_skips_bad_files(cli, tmp_path):
    import csv

    import numpy as np

    from .test_dicom import write_dicom

    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    make_fundus(seed=1).save(root / "a.png")
    make_fundus(seed=2).save(root / "sub" / "b.jpg")
    write_dicom(root / "sub" / "eye.dcm", np.asarray(make_fundus(seed=3)), ImageLaterality="L")
    (root / "broken.png").write_bytes((root / "a.png").read_bytes()[:200])
    (root / "notes.txt").write_text("not an image")
    r = cli("predict", root, "--recursive", "--json", "--csv", tmp_path / "out.csv", "--batch-size", "2",
                "--prompts", "glaucoma")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    names = [res["image"].rsplit("/", 1)[-1] for res in out["results"]]
    assert names == ["a.png", "broken.png", "b.jpg", "eye.dcm"]
    assert "error" in out["results"][1] and "error" not in out["results"][0]
    assert out["results"][3]["laterality"] == "L"
    assert out["summary"] == {"images": 4, "predicted": 3, "errors": 1, "ignored": 1}
    assert "4 files: 3 predicted, 1 errors, 1 non-image files ignored" in r.stderr
    rows = list(csv.DictReader(open(tmp_path / "out.csv", encoding="utf-8")))
    assert [row["image"] for row in rows] == [res["image"] for res in out["results"]]
    assert rows[1]["error"] and not rows[1]["predicted"] and not rows[1]["glaucoma"]
    assert float(rows[0]["normal"]) + float(rows[0]["glaucoma"]) == pytest.approx(1.0, abs=1e-4)
    assert rows[3]["laterality"] == "L" and rows[3]["predicted"] in ("normal", "glaucoma")

    (tmp_path / "empty").mkdir()
    r = cli("predict", tmp_path / "empty")
    assert r.returncode == 2 and "no image files found" in r.stderr and "--recursive" in r.stderr
