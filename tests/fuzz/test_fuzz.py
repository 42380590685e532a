"""Hostile and broken input through the Python API, the CLI and the app's handlers (issue 24).

The corpus (tests/fuzz/make_corpus.py, >= 300 files, generated into a temp folder) holds truncated and
corrupted files of every format at many byte offsets, decompression bombs, odd modes, animations,
non-images and hostile file names. For every file and every entry point the outcome must be a result
or ONE clear line of error: never a traceback, never a hang (a per-file time limit), memory bounded.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from engine import VisionCLIPError, load_image, load_preset
from tests.fuzz.make_corpus import write_corpus

pytestmark = pytest.mark.filterwarnings("ignore")

PER_FILE_SECONDS = 120  # generous: one analysis can take 20 s on an overloaded 2-core machine; a hang never ends
# Every file goes through every entry point; the slow model work (encoder, Grad-CAM) runs on every file
# that decodes in the Python API and `predict`, and on this many of them (distinct formats, modes and
# corruptions) in the per-file app and `explain` passes. The pixels a decoded file yields are ordinary RGB
# from there on, so more would repeat the same path at ~1 s (quiet) to ~20 s (loaded machine) each.
FULL_PIPELINE_SAMPLE = 20
MAX_EXTRA_RSS_MB = 1500  # peak resident memory this module may add above what was there before it
REPO = Path(__file__).resolve().parents[2]


class Hang(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: float):
    def on_alarm(signum, frame):
        raise Hang(f"no answer within {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def peak_rss_mb(who=resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # kilobytes on Linux


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    manifest = write_corpus(tmp_path_factory.mktemp("fuzz") / "corpus")
    assert len(manifest) >= 300
    return manifest


@pytest.fixture(scope="module")
def decodable(corpus) -> set[str]:
    """Paths that engine.load_image opens (fast: no model)."""
    ok = set()
    for e in corpus:
        try:
            with time_limit(PER_FILE_SECONDS):
                load_image(e["path"])
            ok.add(e["path"])
        except (VisionCLIPError, Hang):
            pass
    return ok


@pytest.fixture(scope="module")
def per_file_corpus(corpus, decodable):
    """Every file that does not decode, plus a spread of those that do (see FULL_PIPELINE_SAMPLE)."""
    good = [e for e in corpus if e["path"] in decodable]
    named = [e for e in good if e["kind"] == "valid" and any(k in e["path"] for k in (
        "valid_", "animated", "gray16", "cmyk", "palette", "exif_orientation_6", "camera", "\udcff", "nnnn"))]
    rest = [e for e in good if e not in named]
    sample = (named + rest[:: max(1, len(rest) // 4)])[:FULL_PIPELINE_SAMPLE]
    return [e for e in corpus if e["path"] not in decodable] + sample


@pytest.fixture(scope="module")
def prompts():
    return load_preset("screening")


def one_line_error(msg: str) -> bool:
    return bool(msg) and "\n" not in msg and "Traceback" not in msg and len(msg) < 400


def check(entry: dict, outcome: str, message: str) -> str | None:
    """None when the outcome is acceptable for this file's kind, else a description of the problem."""
    kind, name = entry["kind"], Path(entry["path"]).name[:60]
    if outcome == "crash":
        return f"{name}: {message}"
    if outcome == "error" and not one_line_error(message):
        return f"{name}: error is not one clear line: {message!r}"
    if kind == "valid" and outcome != "ok":
        return f"{name}: a valid image was refused: {message}"
    if kind in ("bomb", "tiny", "empty") and outcome != "error":
        return f"{name}: a {kind} file was accepted"
    if kind == "bomb" and "too large" not in message:
        return f"{name}: a bomb was refused without saying it is too large: {message}"
    return None


def run_each(corpus, fn) -> tuple[list[str], dict]:
    """Call fn(path) on every file under the time limit; fn returns (outcome, message)."""
    problems, counts = [], {"ok": 0, "error": 0, "crash": 0}
    for entry in corpus:
        t0 = time.perf_counter()
        try:
            with time_limit(PER_FILE_SECONDS):
                outcome, message = fn(entry["path"])
        except Exception as e:  # anything that is not a clean error: a traceback for the user
            outcome, message = "crash", f"{type(e).__name__}: {e}"
        counts[outcome] += 1
        problem = check(entry, outcome, message)
        if problem:
            problems.append(f"{problem} ({time.perf_counter() - t0:.1f} s)")
    return problems, counts


def test_corpus_covers_the_required_classes(corpus):
    names = " ".join(Path(e["path"]).name for e in corpus)
    for needed in ("trunc_jpeg", "trunc_png", "trunc_tiff", "trunc_gif", "trunc_webp", "flip_png", "bomb_png",
                   "bomb_jpeg", "animated.gif", "animated.webp", "animated_apng", "gray16", "cmyk",
                   "palette_transparency", "exif_orientation_65535", "document.pdf", "script.svg", "page.html",
                   "archive.zip", "wide_20000x2", "one_by_one", "empty."):
        assert needed in names, needed
    assert any(len(os.fsencode(Path(e["path"]).name)) >= 240 for e in corpus)
    assert any("\udcff" in e["path"] for e in corpus)  # a file name that is not UTF-8


def test_python_api_load_image_and_classify(corpus, default_model, prompts):
    rss0 = peak_rss_mb()
    opened = []

    def api(path):
        try:
            load_image(path)
        except VisionCLIPError as e:
            with pytest.raises(VisionCLIPError):  # classify refuses it the same way
                default_model.classify([path], prompts)
            return "error", str(e)
        opened.append(path)
        return "ok", ""

    problems, counts = run_each(corpus, api)
    assert not problems, "\n".join(problems)
    assert counts["ok"] >= 40 and counts["error"] >= 150
    with time_limit(PER_FILE_SECONDS * 5):  # every decodable file through the model, in batches
        results = default_model.classify(opened, prompts)
    assert len(results) == len(opened)
    assert all(set(r) == set(prompts.classes) and abs(sum(r.values()) - 1) < 1e-3 for r in results)
    print(f"python API: {counts}, peak RSS {peak_rss_mb():.0f} MB (was {rss0:.0f} MB)")
    assert peak_rss_mb() - rss0 < MAX_EXTRA_RSS_MB


def test_app_analyse_handler(per_file_corpus, default_model, tmp_path):
    from visionclip_app import handlers as h
    from visionclip_app.store import CaseStore

    ctx = h.AppContext.create(default_model, CaseStore(tmp_path / "cases.db"), tmp_path / "work")
    table = pd.DataFrame([["normal", "a normal healthy fundus"], ["glaucoma", "a large optic cup"]],
                         columns=h.PROMPT_COLUMNS)

    def app(path):
        out = h.analyse(ctx, path, table, h.saliency_methods()[0], 0.5)
        status = out[0]
        return ("ok", "") if status.startswith(h.STATUS_OK) else ("error", status)

    problems, counts = run_each(per_file_corpus, app)
    print(f"app analyse: {counts}, peak RSS {peak_rss_mb():.0f} MB")
    assert not problems, "\n".join(problems)
    assert ctx.store.count() == 0  # analysing logs nothing


def test_cli_explain_in_process(per_file_corpus, default_model, tmp_path, monkeypatch, capsys):
    """`visionclip explain` on every file (in-process, the model loaded once): exit 0 or one error line."""
    from engine import cli
    from engine.model import VisionCLIP

    monkeypatch.setattr(VisionCLIP, "load", classmethod(lambda cls, *a, **k: default_model))
    out = tmp_path / "overlay.png"

    def explain(path):
        rc = cli.main(["explain", path, "--class", "glaucoma", "--out", str(out)])
        err = capsys.readouterr().err.strip()
        errors = [ln for ln in err.splitlines() if not ln.startswith("visionclip: warning:")]
        if rc == 0:
            return "ok", ""
        return "error", (errors[0] if len(errors) == 1 and errors[0].startswith("visionclip: error: ") else err)

    problems, counts = run_each(per_file_corpus, explain)
    print(f"CLI explain: {counts}")
    assert not problems, "\n".join(problems)


def run_cli(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    # The CLI's own peak memory (VmHWM is per process image, so the test's own size does not leak in).
    snippet = ("import atexit, re, sys; atexit.register(lambda: sys.stderr.write('peak-rss-kb ' + re.search("
               "r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1) + '\\n')); "
               "from engine.cli import main; sys.exit(main())")
    cmd = [sys.executable, "-c", snippet, *args]
    return subprocess.run(cmd, capture_output=True, timeout=timeout, env=env, cwd=REPO)


MAX_CLI_RSS_MB = 3000


def cli_peak_rss_mb(proc: subprocess.CompletedProcess) -> float:
    return int(re.findall(rb"peak-rss-kb (\d+)", proc.stderr)[-1]) / 1024


def no_traceback(proc: subprocess.CompletedProcess) -> None:
    err = proc.stderr.decode("utf-8", "replace")
    assert "Traceback" not in err, err[-3000:]
    assert proc.returncode in (0, 2), (proc.returncode, err[-2000:])


@pytest.mark.slow  # a CLI subprocess over the whole corpus; in process, the fast tier runs explain on every file
@pytest.mark.parametrize("as_json", [True, False], ids=["json", "text"])
def test_cli_predict_whole_corpus_in_one_process(corpus, per_file_corpus, as_json):
    # JSON: every file; text (the same code, printed): the per-file set, hostile names included.
    entries = corpus if as_json else per_file_corpus
    paths = [e["path"] for e in entries]
    proc = run_cli(["predict", *(["--json"] if as_json else []), *paths], timeout=60 + 2 * len(paths))
    no_traceback(proc)
    # Some files scored, so the run succeeds (exit 0); the bad ones are counted in the summary line.
    assert proc.returncode == 0
    errors = int(re.findall(rb"(\d+) errors", proc.stderr)[-1])
    assert errors >= sum(1 for e in entries if e["kind"] in ("bomb", "tiny", "empty"))  # at least those must fail
    rss_mb = cli_peak_rss_mb(proc)
    print(f"CLI predict over {len(paths)} files: peak RSS {rss_mb:.0f} MB")
    assert rss_mb < MAX_CLI_RSS_MB
    if as_json:
        results = json.loads(proc.stdout)["results"]
        assert len(results) == len(paths)
        by_path = {r["image"]: r for r in results}
        problems = []
        for e in entries:
            r = by_path[e["path"]]
            outcome, msg = ("error", r["error"]) if "error" in r else ("ok", "")
            problems.append(check(e, outcome, msg))
        assert not [p for p in problems if p], "\n".join(p for p in problems if p)
    else:
        lines = proc.stdout.decode("utf-8", "replace").splitlines()
        assert len(lines) == len(paths)


def write_labels(folder: Path, entries: list[dict]) -> None:
    import csv

    with open(folder / "labels.csv", "w", newline="", encoding="utf-8", errors="surrogateescape") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label"])
        for e in entries:
            w.writerow([os.path.relpath(e["path"], folder), "normal"])


@pytest.mark.slow  # a CLI subprocess over the whole corpus
def test_cli_eval_on_the_corpus_folder(corpus, tmp_path):
    folder = Path(corpus[0]["path"]).parent
    write_labels(folder, corpus)
    proc = run_cli(["eval", "--data", str(folder), "--bootstrap", "0"], timeout=600)
    no_traceback(proc)
    err = [ln for ln in proc.stderr.decode("utf-8", "replace").splitlines() if ln.startswith("visionclip: error")]
    assert proc.returncode == 2 and len(err) == 1, proc.stderr[-2000:]
    # The valid files alone evaluate to a result.
    valid = [e for e in corpus if e["kind"] == "valid" and "\udcff" not in e["path"]]
    sub = tmp_path / "valid"
    sub.mkdir()
    for i, e in enumerate(valid):
        (sub / f"{i}{Path(e['path']).suffix}").write_bytes(Path(e["path"]).read_bytes())
    write_labels(sub, [{"path": str(sub / f"{i}{Path(e['path']).suffix}")} for i, e in enumerate(valid)])
    proc = run_cli(["eval", "--data", str(sub), "--bootstrap", "0", "--all-classes", "--json"], timeout=600)
    no_traceback(proc)
    assert proc.returncode == 0 and json.loads(proc.stdout)["n"] == len(valid)


def test_a_long_thin_strip_is_refused_before_it_is_padded_to_a_huge_square(tmp_path):
    p = tmp_path / "strip.png"
    from PIL import Image

    Image.new("RGB", (20000, 8), (200, 80, 40)).save(p)  # a few hundred bytes; its square would be 1.2 GB
    rss0 = peak_rss_mb()
    with pytest.raises(VisionCLIPError, match="longest side"):
        load_image(p)
    assert peak_rss_mb() - rss0 < 200
