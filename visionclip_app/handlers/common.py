"""What every tab's handlers share: the app context, the one-line status, the current analysis."""
from __future__ import annotations

import dataclasses
import html
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

from engine import PromptSet, VisionCLIP
from engine.resources import asset_dir

from ..store import Analysis, CaseStore
from ..uploads import UploadNames

STATUS_ERROR = "⚠"  # plain symbols (not emoji): render with ordinary fonts
STATUS_OK = "✓"
DEFAULT_MAX_UPLOAD_MB = 25
EXAMPLES_DIR = asset_dir("examples")  # the installed package's copy, else the checkout's


class UserError(ValueError):
    """A mistake in the form the user can fix; its message is shown as one line."""


@dataclasses.dataclass
class AppContext:
    model: VisionCLIP
    store: CaseStore
    work_dir: Path                      # private temp folder for exports; never named after uploads
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB
    examples_dir: Path = EXAMPLES_DIR
    # One model call at a time: Grad-CAM hooks on the shared network and the text cache are not thread-safe.
    model_lock: threading.RLock = dataclasses.field(default_factory=threading.RLock)
    upload_names: UploadNames = dataclasses.field(default_factory=UploadNames)
    data_root: Path | None = None       # --data-root: the only server folder users may name (None: none)

    @classmethod
    def create(cls, model: VisionCLIP, store: CaseStore, work_dir: str | Path | None = None, **kw) -> "AppContext":
        wd = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="visionclip_app_"))
        wd.mkdir(parents=True, exist_ok=True)
        return cls(model=model, store=store, work_dir=wd, **kw)

    def new_file(self, suffix: str) -> Path:
        """A fresh server-chosen file name in the work folder (upload names are never used)."""
        d = Path(tempfile.mkdtemp(dir=self.work_dir))
        return d / f"visionclip_{time.strftime('%Y%m%d_%H%M%S', time.gmtime())}{suffix}"


@dataclasses.dataclass(frozen=True)
class CurrentAnalysis:
    """A session's analysed image: what is logged with a review (``analysis``) and what only lives in memory."""

    analysis: Analysis
    image: Image.Image
    prompt_set: PromptSet
    quality: dict  # engine.assess_quality's report
    adapter: Any = None  # engine.adapt.Adapter that gave ``analysis.probabilities``; None: zero-shot
    zero_shot: dict[str, float] | None = None  # with an adapter: the zero-shot probabilities, shown beside
    adapter_name: str | None = None
    screening: str = ""  # the screening decision's headline (handlers.analyse.screening_headline)

    @property
    def probabilities(self) -> dict[str, float]:
        return self.analysis.probabilities

    def with_saliency(self, method: str, target: str, class_name: str, thumbnail: bytes) -> "CurrentAnalysis":
        return dataclasses.replace(self, analysis=dataclasses.replace(
            self.analysis, saliency_method=method, saliency_target=target, saliency_class=class_name,
            saliency_thumbnail=thumbnail))


def md_text(value: Any) -> str:
    """User or prompt text for a Markdown output: shown as typed, never as a live HTML tag (SECURITY.md)."""
    return html.escape(str(value), quote=False)


def one_line(msg: Any) -> str:
    return " ".join(str(msg).split())[:300]


def error_status(msg: Any) -> str:
    """A one-line error for a Markdown status and a pop-up (which renders HTML): escaped here, because error
    messages quote what the user typed (class names, file names); callers pass plain text."""
    text = md_text(one_line(msg))
    try:
        gr.Warning(text)
    except Exception:  # pragma: no cover - outside a request gradio only logs
        pass
    return f"{STATUS_ERROR} {text}"


def ok_status(msg: Any) -> str:
    """A one-line success for a Markdown status: the caller escapes user text in it with ``md_text``."""
    return f"{STATUS_OK} {one_line(msg)}"
