"""Reporting failures of user code by the user's own file and line, not by this package's frames."""

from __future__ import annotations

import os
import traceback

# Lines of traceback kept with an error verdict (the end, where the reward code failed).
TRACEBACK_LINES = 12
_OWN_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _user_frames(exc: BaseException) -> list[traceback.FrameSummary]:
    return [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if not frame.filename.startswith(_OWN_DIR) and not frame.filename.startswith("<frozen")
    ]


def user_location(exc: BaseException) -> str | None:
    """`file:line` where user code raised (a SyntaxError's own position first)."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{exc.filename}:{exc.lineno}"
    frames = _user_frames(exc)
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else None


def describe_exception(exc: BaseException) -> str:
    """`Type: message (file:line)`."""
    where = user_location(exc)
    return f"{type(exc).__name__}: {exc}" + (f" ({where})" if where else "")


def traceback_tail(exc: BaseException) -> str:
    """The last lines of the traceback, this package's own frames left out."""
    lines = traceback.format_list(_user_frames(exc)) + traceback.format_exception_only(type(exc), exc)
    return "\n".join("".join(lines).rstrip().splitlines()[-TRACEBACK_LINES:])
