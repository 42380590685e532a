"""Keep uploaded file names off the disk.

Gradio saves each upload in its cache as ``<cache>/<hash>/<the browser's file name>``, so a name like
``Jane_Doe_MRN123.jpg`` would become a path on the server. :class:`NeutralUploadNames` is a small ASGI
middleware for the upload route: before gradio sees the multipart body it replaces every part's
``filename="..."`` with ``upload-<random>.<ext>`` (only a known image/JSON extension is kept). The original
base name is remembered in memory only (:class:`UploadNames`, bounded), so the app can store it in the case
log when, and only when, the reviewer opts in.
"""
from __future__ import annotations

import re
import secrets
import threading
from collections import OrderedDict
from pathlib import PurePosixPath, PureWindowsPath

SAFE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".gif", ".json",
                   ".dcm", ".dicom"}  # DICOM: engine.load_image also knows it by its magic bytes
NEUTRAL_RE = re.compile(r"^upload-([0-9a-f]{16})(\.[a-z]+)?$")
_FILENAME_RE = re.compile(rb'(;\s*filename=")([^"\r\n]*)(")', re.IGNORECASE)
_FILENAME_STAR_RE = re.compile(rb";\s*filename\*=[^;\r\n]*", re.IGNORECASE)


class UploadNames:
    """Bounded in-memory map: neutral token -> the browser's original base name."""

    def __init__(self, capacity: int = 10_000):
        self._names: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()
        self.capacity = capacity

    def neutral_name(self, original: str) -> str:
        base = PureWindowsPath(PurePosixPath(original).name).name[:255]
        ext = PurePosixPath(base).suffix.lower()
        token = secrets.token_hex(8)
        with self._lock:
            self._names[token] = base
            while len(self._names) > self.capacity:
                self._names.popitem(last=False)
        return f"upload-{token}{ext if ext in SAFE_EXTENSIONS else ''}"

    def original_name(self, path_or_name: str | None) -> str | None:
        """The original name of an upload from its (neutral) path; None if unknown."""
        if not path_or_name:
            return None
        m = NEUTRAL_RE.match(PurePosixPath(str(path_or_name)).name)
        if not m:
            return None
        with self._lock:
            return self._names.get(m.group(1))


def rewrite_multipart(body: bytes, boundary: bytes, names: UploadNames) -> bytes:
    """Replace the file name in each part's headers (never in the file data)."""
    delim = b"--" + boundary
    pieces = body.split(delim)
    out = [pieces[0]]
    for piece in pieces[1:]:
        head_end = piece.find(b"\r\n\r\n")
        if head_end < 0:
            out.append(piece)
            continue
        head, rest = piece[:head_end], piece[head_end:]

        def sub(m: re.Match) -> bytes:
            original = m.group(2).decode("utf-8", errors="replace")
            return m.group(1) + names.neutral_name(original).encode() + m.group(3)

        head = _FILENAME_STAR_RE.sub(b"", head)
        head = _FILENAME_RE.sub(sub, head)
        out.append(head + rest)
    return delim.join(out)


def _boundary(content_type: bytes) -> bytes | None:
    m = re.search(rb'boundary="?([^";\s]+)"?', content_type, re.IGNORECASE)
    return m.group(1) if m else None


class NeutralUploadNames:
    """ASGI middleware: neutral file names for multipart POSTs to ``.../upload``."""

    def __init__(self, app, names: UploadNames, max_bytes: int):
        self.app = app
        self.names = names
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "POST" or not scope.get("path", "").endswith("/upload"):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        boundary = _boundary(headers.get(b"content-type", b""))
        if boundary is None:
            return await self.app(scope, receive, send)
        chunks, size, more = [], 0, True
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await send({"type": "http.response.start", "status": 413,
                            "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
                await send({"type": "http.response.body", "body": b"File too large for this app's upload limit."})
                return
            chunks.append(chunk)
            more = msg.get("more_body", False)
        body = rewrite_multipart(b"".join(chunks), boundary, self.names)
        new_headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-length"]
        new_headers.append((b"content-length", str(len(body)).encode()))
        scope = dict(scope, headers=new_headers)
        delivered = False

        async def replay():
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
