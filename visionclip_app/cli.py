"""Command line of the VisionCLIP app: ``python launch.py [--host H] [--port N] [--db PATH] ...``.

``python -m visionclip_app adapt --cases DB ...`` fits a few-shot adapter on the reviewed cases (adapt_cli.py).

Serves locally and offline; never creates a public share link.
"""
from __future__ import annotations

import argparse
import atexit
import os
import shutil
import stat
import sys
import tempfile
import time
from pathlib import Path

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="launch.py", description="VisionCLIP web app (research use only).")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--db", default="visionclip_cases.db", help="SQLite case log (default ./visionclip_cases.db)")
    p.add_argument("--model", default=None, help="model checkpoint (default: the embedded model)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--auth", default=None, help="require a login, given as user:password")
    g.add_argument("--auth-file", default=None, help="file of user:password lines")
    p.add_argument("--data-root", default=None, metavar="DIR",
                   help="the one server folder users may name (Prompt lab folders); default none: folder features off")
    p.add_argument("--max-queue", type=int, default=64, metavar="N",
                   help="requests allowed to wait; beyond it the browser is told the app is busy (default 64)")
    p.add_argument("--max-upload-mb", type=float, default=25.0, help="largest accepted upload (default 25 MB)")
    args = p.parse_args(argv)
    if not 1 <= args.port <= 65535:
        p.error("--port must be between 1 and 65535")
    if not 0 < args.max_upload_mb <= 1024:
        p.error("--max-upload-mb must be between 0 and 1024")
    if args.max_queue < 1:
        p.error("--max-queue must be at least 1")
    if args.data_root is not None and not Path(args.data_root).expanduser().is_dir():
        p.error(f"--data-root {args.data_root} is not a folder")
    return args


def parse_auth(args: argparse.Namespace) -> list[tuple[str, str]] | None:
    lines: list[str] = []
    if args.auth:
        lines = [args.auth]
    elif args.auth_file:
        try:
            lines = [ln.strip() for ln in Path(args.auth_file).read_text(encoding="utf-8").splitlines()]
        except (OSError, UnicodeDecodeError) as e:
            raise SystemExit(f"error: cannot read --auth-file: {e}")
        lines = [ln for ln in lines if ln and not ln.startswith("#")]
        if not lines:
            raise SystemExit("error: --auth-file has no user:password lines")
    creds = []
    for ln in lines:
        user, sep, pw = ln.partition(":")
        if not sep or not user.strip() or not pw:
            raise SystemExit("error: credentials must be given as user:password")
        creds.append((user.strip(), pw))
    return creds or None


def auth_file_warnings(path: str | None) -> list[str]:
    """A password file others on the machine can read is no protection: say so."""
    if not path:
        return []
    try:
        mode = Path(path).stat().st_mode
    except OSError:
        return []
    if mode & stat.S_IROTH:
        return [f"WARNING: --auth-file {path} is readable by every user of this machine; "
                f"restrict it with: chmod 600 {path}"]
    return []


def host_warnings(host: str, auth) -> list[str]:
    if host in LOCAL_HOSTS:
        return []
    out = [f"WARNING: binding to {host} makes the app reachable from other machines. "
           "It has no clinical approval; use --auth and a trusted network."]
    if not auth:
        out.append("WARNING: no --auth given: anyone who can reach this port can use the app and read the case log.")
    return out


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["adapt"]:
        from .adapt_cli import main as adapt_main
        return adapt_main(argv[1:])
    args = parse_args(argv)
    auth = parse_auth(args)
    for w in auth_file_warnings(args.auth_file) + host_warnings(args.host, auth):
        print(w, file=sys.stderr)
    # Offline and private: no telemetry, no hub downloads, uploads in a private folder removed at exit.
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    private_tmp = tempfile.mkdtemp(prefix="visionclip_", dir=os.environ.get("VISIONCLIP_TMPDIR") or None)
    os.chmod(private_tmp, 0o700)
    os.environ["GRADIO_TEMP_DIR"] = os.path.join(private_tmp, "gradio")
    atexit.register(shutil.rmtree, private_tmp, True)

    t0 = time.perf_counter()
    # Load the model (torch, open_clip, weights) in a thread while this one imports gradio: on a 2-core
    # machine the two overlap and the first page appears a few seconds sooner.
    import threading
    loaded: dict = {}

    def load_model():
        try:
            from engine import VisionCLIP
            loaded["model"] = VisionCLIP.load(args.model)
        except BaseException as e:  # reported below, in the main thread
            loaded["error"] = e

    loader = threading.Thread(target=load_model, name="visionclip-model-loader", daemon=True)
    loader.start()
    import gradio  # noqa: F401  (the other slow import)
    loader.join()
    from engine import VisionCLIPError
    from .handlers import AppContext
    from .store import CaseStore, StoreError
    from .ui import CSS, THEME, build_ui

    try:
        if "error" in loaded:
            raise loaded["error"]
        model = loaded["model"]
        model.image_runtime = "auto"  # a worklist of 256 images or more runs the faster image tower (engine.image_runtime)
        store = CaseStore(args.db)
    except (VisionCLIPError, StoreError, OSError) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    data_root = Path(args.data_root).expanduser().resolve() if args.data_root else None
    ctx = AppContext.create(model, store, Path(private_tmp) / "work", max_upload_mb=args.max_upload_mb,
                            data_root=data_root)
    demo = build_ui(ctx)
    demo.queue(default_concurrency_limit=4, max_size=args.max_queue)  # beyond it: "queue is full", not a hang
    print(f"VisionCLIP app: model {model.model_id}, case log {Path(args.db).resolve()}, "
          f"ready in {time.perf_counter() - t0:.1f} s", flush=True)
    from .handlers import warmup
    threading.Thread(target=warmup, args=(ctx,), daemon=True, name="visionclip-warmup").start()
    from starlette.middleware import Middleware
    from .uploads import NeutralUploadNames
    upload_limit = int(args.max_upload_mb * 1024 * 1024)
    middleware = [Middleware(NeutralUploadNames, names=ctx.upload_names, max_bytes=upload_limit + 1024 * 1024)]
    demo.launch(
        server_name=args.host, server_port=args.port, share=False, auth=auth, inbrowser=False,
        max_file_size=upload_limit, app_kwargs={"middleware": middleware}, theme=THEME, css=CSS, show_error=False, quiet=False,
        footer_links=[], allowed_paths=[str(ctx.examples_dir)], mcp_server=False, ssr_mode=False,
    )
    return 0
