"""The app's command line, the UI's construction and neutral upload names."""
from __future__ import annotations

import re

import pytest

from visionclip_app import handlers as h


def test_build_ui_constructs(ctx):
    import gradio as gr
    from visionclip_app.ui import build_ui
    assert isinstance(build_ui(ctx), gr.Blocks)


def test_cli_args_auth_and_host_warnings(tmp_path):
    from visionclip_app import cli
    a = cli.parse_args([])
    assert (a.host, a.port) == ("127.0.0.1", 7860)  # safe by default: local only
    assert cli.parse_auth(a) is None
    assert cli.parse_auth(cli.parse_args(["--auth", "ann:s3:cret"])) == [("ann", "s3:cret")]
    f = tmp_path / "users.txt"
    f.write_text("# reviewers\nann:pw1\nbob:pw2\n")
    assert cli.parse_auth(cli.parse_args(["--auth-file", str(f)])) == [("ann", "pw1"), ("bob", "pw2")]
    for bad in (["--auth", "nopassword"], ["--auth", ":pw"], ["--auth-file", str(tmp_path / "missing")]):
        with pytest.raises(SystemExit):
            cli.parse_auth(cli.parse_args(bad))
    for bad in (["--port", "0"], ["--max-upload-mb", "-1"], ["--auth", "a:b", "--auth-file", str(f)]):
        with pytest.raises(SystemExit):
            cli.parse_args(bad)
    assert cli.host_warnings("127.0.0.1", None) == [] and cli.host_warnings("localhost", None) == []
    assert len(cli.host_warnings("0.0.0.0", None)) == 2
    assert len(cli.host_warnings("0.0.0.0", [("a", "b")])) == 1


def test_cli_main_launches_locally_without_share(model, tmp_path, monkeypatch, capsys):
    import gradio as gr
    import engine
    from visionclip_app import cli
    seen = {}
    monkeypatch.setattr(engine.VisionCLIP, "load", classmethod(lambda cls, path=None, device=None: model))
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kw: seen.update(kw))
    monkeypatch.setattr(h, "warmup", lambda ctx: 0.0)
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))  # restored after the test
    rc = cli.main(["--host", "0.0.0.0", "--port", "7999", "--db", str(tmp_path / "c.db"), "--auth", "a:b",
                   "--max-upload-mb", "5"])
    assert rc == 0
    assert seen["share"] is False and seen["server_name"] == "0.0.0.0" and seen["server_port"] == 7999
    assert seen["auth"] == [("a", "b")] and seen["max_file_size"] == 5 * 1024 * 1024
    assert "WARNING: binding to 0.0.0.0" in capsys.readouterr().err
    assert (tmp_path / "c.db").exists()


def test_neutral_upload_names():
    from visionclip_app.uploads import UploadNames, rewrite_multipart
    names = UploadNames(capacity=2)
    body = (b"--XyZ\r\nContent-Disposition: form-data; name=\"files\"; filename=\"C:\\\\scans\\\\Jane Doe MRN1.JPG\"\r\n"
            b"Content-Type: image/jpeg\r\n\r\nfilename=\"keep-me-in-data\"\r\n"
            b"--XyZ\r\nContent-Disposition: form-data; name=\"files\"; filename=\"notes.exe\"\r\n\r\nMZ\r\n--XyZ--\r\n")
    out = rewrite_multipart(body, b"XyZ", names)
    assert b"Jane" not in out and b"notes" not in out
    assert b'filename="keep-me-in-data"' in out  # file data untouched
    new = [m.decode() for m in re.findall(rb'filename="(upload-[0-9a-f]{16}[^"]*)"', out)]
    assert len(new) == 2 and new[0].endswith(".jpg") and "." not in new[1]
    assert names.original_name(f"/tmp/x/{new[0]}") == "Jane Doe MRN1.JPG"
    assert names.original_name("/tmp/x/upload-0000000000000000.png") is None
    assert names.original_name("photo.png") is None
    names.neutral_name("a.png")
    assert names.original_name(new[0]) is None  # evicted: bounded memory
