"""Errors that reach users as one clear line (CLI, app), never as a traceback."""


class VisionCLIPError(ValueError):
    """A user-facing error: bad input, bad config, missing file. The message is one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
