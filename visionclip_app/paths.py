"""Server-side paths that app users type (Prompt lab folders, worklists) must lie under ``--data-root``.

Without a data root (the default) every such path is refused, so folder features stay off until an
administrator names the one folder the app may read. With one, a path is taken relative to the root;
``..``, symlinks that lead out of the root and absolute paths elsewhere are refused with one line.
"""
from __future__ import annotations

import os
from pathlib import Path


class PathRefused(ValueError):
    """A user-supplied server path that may not be opened; the message is one line."""


MAX_PATH_CHARS = 1024


def resolve_under_root(root: str | os.PathLike | None, user_path: str | os.PathLike) -> Path:
    """The real path of ``user_path`` inside ``root``; raises :class:`PathRefused` otherwise.

    ``user_path`` may be relative (to the root) or absolute (it must then already lie in the root).
    Symlinks are followed before the check, so a link inside the root that points outside is refused.
    The path need not exist: the caller reports a missing file in its own words.
    """
    if root is None or str(root).strip() == "":
        raise PathRefused("Server folders are off: start the app with --data-root DIR to allow them.")
    text = os.fspath(user_path)
    text = text.strip() if isinstance(text, str) else os.fsdecode(text).strip()
    if not text:
        raise PathRefused("Enter a folder path under the data root.")
    if len(text) > MAX_PATH_CHARS or "\x00" in text:
        raise PathRefused("That path is not allowed.")
    real_root = Path(root).expanduser().resolve(strict=False)
    given = Path(text)
    if ".." in given.parts:
        raise PathRefused("Paths may not contain '..'; give a folder under the data root.")
    candidate = given if given.is_absolute() else real_root / given
    try:
        real = candidate.resolve(strict=False)  # follows every symlink that exists
    except (OSError, RuntimeError):  # a symlink loop
        raise PathRefused("That path cannot be resolved (a symlink loop?).") from None
    if real != real_root and real_root not in real.parents:
        if given.is_absolute():
            raise PathRefused("That path is outside the data root; give a folder under it.")
        raise PathRefused("That path leads outside the data root (through a symlink); it is refused.")
    return real
